"""The repository explains itself: it cites the paper, not files a reader cannot open, and
each shared idea (the atomic write, the tests' thread setting) has one home."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP_DIRS = {".git", ".nox", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", "runs"}
AGENT = "packages/merpo-agent/src/merpo_agent/"
# Files other changes are rewriting at the time of writing; each drops out of this list as
# it is rewritten (the checks below then cover it too).
BEING_REWRITTEN: set[str] = set()
BEING_REWRITTEN_DIRS: tuple[str, ...] = ()


def _files(*suffixes: str) -> list[Path]:
    out = []
    for path in ROOT.rglob("*"):
        rel = path.relative_to(ROOT)
        if set(rel.parts) & SKIP_DIRS or not path.is_file() or path.suffix not in suffixes:
            continue
        name = rel.as_posix()
        if name in BEING_REWRITTEN or name.startswith(BEING_REWRITTEN_DIRS):
            continue
        out.append(path)
    return out


# What points outside the repository: the notes it was built from, tracker issues, paths.
# (A bare "§" is fine: it cites the paper's sections, e.g. "§4.3".)
OUTSIDE = re.compile(r"SPEC\b|DESIGN\.md|\b[Ii]ssue #?\d|/work/|/shared/")


def test_code_and_docs_cite_the_paper_not_files_outside_the_repository():
    this = Path(__file__).resolve()
    found = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in _files(".py", ".md", ".toml", ".yaml", ".cfg")
        if path.resolve() != this
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert not found, "cite the paper (section, equation, table) instead:\n" + "\n".join(found)


def test_files_are_written_through_the_one_atomic_write():
    home = "packages/merpo-data/src/merpo_data/atomic.py"
    # checkpoint.py also renames a hard link of the previous checkpoint into place
    allowed = {"tempfile.mkstemp": {home}, "os.replace(": {home, AGENT + "checkpoint.py"}}
    for needle, places in allowed.items():
        users = {
            path.relative_to(ROOT).as_posix()
            for path in _files(".py")
            if path.relative_to(ROOT).parts[0] in ("packages", "benchmarks")
            and needle in path.read_text()
        }
        assert users <= places, f"write through merpo_data.atomic: {sorted(users - places)}"


def _fixtures_setting_threads(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef) and any(
            "fixture" in ast.unparse(d) for d in node.decorator_list
        ):
            if "set_num_threads" in ast.unparse(node):
                found.append(node.name)
    return found


def test_no_test_file_has_its_own_torch_thread_fixture():
    assert _fixtures_setting_threads(ROOT / "tests" / "conftest.py") == ["one_torch_thread"]
    copies = {
        path.relative_to(ROOT).as_posix(): names
        for path in (ROOT / "tests").rglob("*.py")
        if path != ROOT / "tests" / "conftest.py"
        if (names := _fixtures_setting_threads(path))
    }
    assert not copies, f"tests/conftest.py's one_torch_thread already does it: {copies}"


def test_readmes_show_check_env_on_the_headless_path():
    """check_env without skip_render_check opens a glfw window for the MuJoCo envs and
    aborts on a machine without a display: every check_env a README or test shows skips it."""
    files = [*ROOT.glob("packages/*/README.md"), ROOT / "README.md", *ROOT.glob("tests/**/*.py")]
    calls = [line for path in files for line in path.read_text().splitlines()
             if "check_env(" in line and "import" not in line and "def " not in line
             and "check_env(\" in line" not in line and "calls" not in line]
    assert calls and all("skip_render_check=True" in line for line in calls), calls


def _import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports, at the top or inside a function (imports
    under ``TYPE_CHECKING`` and of a package's ``__init__`` facade left out)."""
    modules = {}
    for src in ROOT.glob("packages/*/src"):
        for path in src.rglob("*.py"):
            modules[".".join(path.relative_to(src).with_suffix("").parts).removesuffix(
                ".__init__")] = path
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        typing_only = {id(sub) for node in ast.walk(tree) if isinstance(node, ast.If)
                       and "TYPE_CHECKING" in ast.unparse(node.test) for sub in ast.walk(node)}
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules
                           else node.module for a in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t in modules and t != name
                            and modules[t].name != "__init__.py"}
    return graph


def test_no_import_circles_in_the_packages():
    """No module imports, even inside a function, a module that leads back to it."""
    graph = _import_graph()
    circles, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                circles.append(" -> ".join([*stack[stack.index(nxt):], nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not circles, circles


def test_the_config_and_the_parser_import_no_torch():
    """``merpo-agent --help`` and reading a config stay torch-free."""
    import subprocess
    import sys

    code = ("import sys, merpo_agent.presets, merpo_agent.arguments, merpo_agent.schema; "
            "merpo_agent.arguments.build_parser(); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"
