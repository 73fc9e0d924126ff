"""Sessions: quickstart (the main job), tests, lint, bench, gpu.

The packages are installed the way a user installs them (non-editable, every path listed so
pip does not look for the sibling packages on the index). torch is pinned to the CPU build
that pip finds locally; the packages themselves only declare ``torch>=2.4``.
"""

import os

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests"]

TORCH = "torch==2.13.0"
PACKAGES = ["packages/merpo-envs", "packages/merpo-data", "packages/merpo-agent"]
HEADLESS = {"MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}


def install_packages(session: nox.Session, *extra: str, agent_extras: str = "") -> None:
    """``agent_extras``: merpo-agent's optional dependencies too (e.g. "ray")."""
    session.install(TORCH)
    packages = PACKAGES[:-1] + [f"{PACKAGES[-1]}[{agent_extras}]" if agent_extras
                                else PACKAGES[-1]]
    # --force-reinstall of our own packages only: a reused venv must run the current code.
    session.install(*packages, *extra)
    session.install("--no-deps", "--force-reinstall", *PACKAGES)


@nox.session
def quickstart(session: nox.Session) -> None:
    """End to end on Point-Robot-Wind, CPU: datasets, meta-training, meta-test table, plot."""
    install_packages(session)
    session.run("python", "-m", "merpo_agent.quickstart", *session.posargs, env=HEADLESS)


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite (CPU), with Ray for the `--executor ray` tests."""
    install_packages(session, "pytest>=8", agent_extras="ray")
    session.run("pytest", *session.posargs, env=HEADLESS)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", "packages", "tests", "benchmarks", "noxfile.py")


@nox.session
def bench(session: nox.Session) -> None:
    """Speed and memory benchmarks; they print ratios measured side by side (not tests)."""
    install_packages(session)
    session.run("python", "benchmarks/run_all.py", *session.posargs, env=HEADLESS)


@nox.session
def gpu(session: nox.Session) -> None:
    """CUDA tests (marked `gpu`, deselected by default) on a machine with a GPU."""
    session.install(*PACKAGES, "pytest>=8")
    session.run("pytest", "-m", "gpu", *session.posargs, env=HEADLESS)
