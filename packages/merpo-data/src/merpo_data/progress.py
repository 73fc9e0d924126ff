"""Progress bars that suit where the output goes: the one home of merpo's progress bars.

On a terminal, a tqdm bar redrawn in place. Anywhere else (a log file, CI, a pipe) a
redrawn bar would leave thousands of carriage-return updates, so :func:`progress_bar`
writes one line per ``LINE_PERCENT`` percent of the work instead (and the last one).
``merpo-data generate``, ``merpo-agent train`` and the baselines use it.
"""

from __future__ import annotations

import math
import sys
import time
from typing import IO, Any

from tqdm.auto import tqdm

LINE_PERCENT = 5  # a non-interactive run gets a line every this many percent


class LineProgress:
    """The part of tqdm's interface merpo uses (``update``, ``set_postfix``, ``close``,
    ``n``), written as whole lines every ``every`` units."""

    def __init__(self, total: int, desc: str, unit: str, initial: int, file: IO[str]) -> None:
        self.total, self.desc, self.unit, self.n, self.file = total, desc, unit, initial, file
        self.every = max(1, math.ceil(total * LINE_PERCENT / 100))
        self.postfix: dict[str, Any] = {}
        self.start = time.monotonic()
        self._last = initial
        self._closed = False

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.n - self._last >= self.every or self.n >= self.total:
            self._line()

    def set_postfix(self, **values: Any) -> None:
        self.postfix = values

    def close(self) -> None:
        if not self._closed and self.n != self._last:
            self._line()
        self._closed = True

    def _line(self) -> None:
        self._last = self.n
        percent = 100 * self.n / self.total if self.total else 100.0
        extra = "".join(f", {key}={value}" for key, value in self.postfix.items())
        elapsed = time.monotonic() - self.start
        print(f"{self.desc}: {self.n}/{self.total} {self.unit} ({percent:.0f}%, "
              f"{elapsed:.0f}s{extra})", file=self.file, flush=True)


def progress_bar(total: int, desc: str, unit: str = "it", initial: int = 0,
                 disable: bool = False, file: IO[str] | None = None) -> Any:
    """A tqdm bar on a terminal, a :class:`LineProgress` elsewhere (``file``: default
    stderr, where tqdm writes); ``disable``: a bar that shows nothing."""
    file = sys.stderr if file is None else file
    isatty = getattr(file, "isatty", None)
    if disable or (isatty is not None and isatty()):
        return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=disable,
                    file=file, dynamic_ncols=True)
    return LineProgress(total, desc, unit, initial, file)


__all__ = ["LINE_PERCENT", "LineProgress", "progress_bar"]
