"""The house rules of the tree itself (issue 23): no import circle between two modules of the
host side, no include circle between two files of the probe, and no function over
:data:`MAX_LINES` lines in Python or C unless a comment right above it says why it must be one
piece (the words "one piece" in it)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PROBES = ROOT / "src" / "vdsomatrix" / "probes"
MAX_LINES = 60
WHY = "one piece"


def _modules() -> dict[str, Path]:
    found = {}
    for path in (SRC / "vdsomatrix").rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imported(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """The modules of ours that ``path`` imports anywhere in it (lazy imports in functions
    too: a cycle through them is still a cycle)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    wanted: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            wanted.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                wanted.add(full if full in modules else base)
    deps = set()
    for target in wanted:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        # A module's own package (its __init__) runs first whatever it imports: not an edge.
        if target and target != name and not name.startswith(target + "."):
            deps.add(target)
    return deps


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan, iterative enough for a
    tree of this size through recursion)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for dep in sorted(graph.get(node, ())):
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in on_stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_on_the_host_side():
    modules = _modules()
    graph = {name: _imported(path, name, modules) for name, path in modules.items()}
    assert graph["vdsomatrix.runner"], "the import graph came out empty: the finder is broken"
    assert _cycles(graph) == []


def _includes(path: Path) -> set[str]:
    return set(re.findall(r'^\s*#\s*include\s+"([^"]+)"', path.read_text(), re.M))


def test_no_include_circle_in_the_probe():
    files = {p.name: p for p in PROBES.rglob("*") if p.suffix in (".c", ".h")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        stem = Path(name).stem
        # A header and its .c are one module; an edge goes from a module to the modules whose
        # headers it includes.
        graph.setdefault(stem, set()).update(
            Path(inc).stem for inc in _includes(path) if Path(inc).stem != stem)
    assert _cycles(graph) == []


def _says_why(lines: list[str], first: int) -> bool:
    """Whether the comment right above line ``first`` (1-based) says why it is one piece."""
    i = first - 2
    while i >= 0 and lines[i].strip().startswith(("#", "//", "/*", "*", "@")):
        if WHY in lines[i].lower():
            return True
        i -= 1
    return False


def _long_python() -> list[str]:
    found = []
    for path in sorted([*SRC.rglob("*.py"), *PROBES.rglob("*.py")]):
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                length = node.end_lineno - node.lineno + 1
                if length > MAX_LINES and not _says_why(lines, first):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length})")
    return found


# A C function definition as this project writes them: the signature starts in column 0 and
# its body's braces close in column 0.
_C_SIGNATURE = re.compile(r"^(?:static\s+|inline\s+)*[A-Za-z_][\w\s\*]*\b(\w+)\s*\([^;]*$")


def _long_c(text: str, name: str = "") -> list[str]:
    lines = text.splitlines()
    found, start, function = [], None, ""
    for number, line in enumerate(lines, 1):
        if start is None:
            match = _C_SIGNATURE.match(line)
            if match and not line.startswith(("typedef", "struct", "enum", "union", "#")):
                start, function = number, match[1]
        elif line.startswith("}"):
            length = number - start + 1
            if length > MAX_LINES and not _says_why(lines, start):
                found.append(f"{name}:{start} {function} ({length})")
            start = None
        elif line and not line[0].isspace() and line[0] not in "{)" and not line.endswith(
                (",", "{")) and not _C_SIGNATURE.match(line) and start == number - 1:
            start = None  # a declaration that merely looked like a signature
    return found


def test_the_c_scanner_sees_a_long_function():
    body = "\n".join(["    x++;"] * (MAX_LINES + 1))
    long_one = f"static int f(int x)\n{{\n{body}\n}}\n"
    assert _long_c(long_one, "t.c") == [f"t.c:1 f ({MAX_LINES + 4})"]
    assert _long_c(f"/* one piece: a table */\n{long_one}", "t.c") == []
    assert _long_c("static int g(void)\n{\n    return 0;\n}\n", "t.c") == []


@pytest.mark.parametrize("language", ["python", "c"])
def test_no_long_function_without_a_reason(language):
    if language == "python":
        found = _long_python()
    else:
        found = [hit for path in sorted(PROBES.rglob("*.c"))
                 for hit in _long_c(path.read_text(), str(path.relative_to(ROOT)))]
    assert found == [], (f"functions over {MAX_LINES} lines: split them into named steps, or "
                         f"say above each why it must be {WHY}")


def _calls(path: Path) -> list[str]:
    """Dotted names of what ``path`` calls ("client.containers.create", "processes.spawn")."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            parts, func = [], node.func
            while isinstance(func, ast.Attribute):
                parts.append(func.attr)
                func = func.value
            if isinstance(func, ast.Name):
                parts.append(func.id)
            names.append(".".join(reversed(parts)))
    return names


def test_only_the_engine_creates_containers_and_backends_start_nothing_themselves():
    engine = SRC / "vdsomatrix" / "engine"
    creating, spawning = [], []
    for path in sorted((SRC / "vdsomatrix").rglob("*.py")):
        if engine in path.parents or PROBES in path.parents:
            continue
        calls = _calls(path)
        creating += [f"{path.name}: {c}" for c in calls
                     if c.endswith(("containers.create", "containers.run", "create_container"))]
        # The host backend's environment is this machine: its probe is a plain child process.
        if path.parent.name == "backends" and path.name != "host.py":
            spawning += [f"{path.name}: {c}" for c in calls
                         if c.endswith(("spawn", "Popen", "run_bounded", "containers.get"))]
    assert _calls(engine / "container.py").count("self.client.containers.create") == 1
    assert creating == [], "containers are created by engine.Container alone"
    assert spawning == [], "a backend starts containers and guests through engine/ alone"


def test_the_two_halves_name_one_schema():
    """probe.py cannot import the host side (it runs alone, stdlib only, in the environment), so
    the schema name is written on both sides of the contract: they must be the same."""
    from vdsomatrix import SCHEMA

    tree = ast.parse((PROBES / "probe.py").read_text())
    written = [node.value.value for node in tree.body if isinstance(node, ast.Assign)
               and any(getattr(t, "id", None) == "SCHEMA" for t in node.targets)]
    assert written == [SCHEMA]
