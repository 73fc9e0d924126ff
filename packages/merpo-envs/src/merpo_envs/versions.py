"""The ``--version`` line of the merpo command lines: what a bug report needs to say."""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import PackageNotFoundError, version


def version_line(dist: str, *others: str) -> str:
    """``DIST X (OTHER Y, ..., python Z)`` from the installed distributions' metadata."""

    def of(name: str) -> str:
        try:
            return f"{name} {version(name)}"
        except PackageNotFoundError:
            return f"{name} (not installed)"

    return f"{of(dist)} ({', '.join([*map(of, others), f'python {sys.version.split()[0]}'])})"


class VersionAction(argparse.Action):
    """``--version``: print :func:`version_line` of ``dists`` on one line (argparse's own
    version action wraps it at the terminal width) and exit."""

    def __init__(self, option_strings, dists: tuple[str, ...], dest=argparse.SUPPRESS, **kwargs):
        kwargs.setdefault("help", "print the versions of this package and its dependencies")
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0, **kwargs)
        self.dists = dists

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_line(*self.dists))
        parser.exit()
