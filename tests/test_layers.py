"""Imports run one way (DESIGN.md, Floors): drivers of many runs -> one run -> fleet and analysis -> the pure
libraries, with no circle anywhere. Read from the source, so an import inside a function counts too."""

import ast
from pathlib import Path

ROOT = Path(__file__).parents[1]
PACKAGES = ("network_models", "aggregation", "fleet", "analysis", "scenarios")
DRIVERS = {"scenarios.cli", "scenarios.sweep", "scenarios.plan", "scenarios.grid"}

# Floors, lowest first: a module imports only from lower floors and from its own package.
FLOOR = {"network_models": 0, "aggregation": 0, "fleet": 1, "analysis": 1, "scenarios": 2}
DRIVER_FLOOR = 3
# Outside libraries a floor must not use: the pure libraries and analysis run no Ray and no SimPy.
BANNED = {"network_models": {"ray", "simpy"}, "aggregation": {"ray", "simpy"}, "analysis": {"ray", "simpy"}}


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(source: str, module: str, is_package: bool, known: set[str]) -> set[str]:
    """Every module `source` imports: project modules by full name (a name imported from a package counts as
    its submodule where there is one), outside libraries by their top-level name."""
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package
                package = module.split(".") if is_package else module.split(".")[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            out |= {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names}
    return {name if name.split(".")[0] in PACKAGES else name.split(".")[0] for name in out}


def import_graph(root: Path) -> dict[str, set[str]]:
    files = {module_name(p, root): p for package in PACKAGES for p in (root / package).rglob("*.py")}
    known = set(files)
    return {m: imports_of(p.read_text(encoding="utf-8"), m, p.name == "__init__.py", known) for m, p in files.items()}


def floor_of(module: str) -> int:
    return DRIVER_FLOOR if module in DRIVERS else FLOOR[module.split(".")[0]]


def forbidden_imports(graph: dict[str, set[str]]) -> list[str]:
    problems = []
    for module, names in sorted(graph.items()):
        package = module.split(".")[0]
        for name in sorted(names):
            if name.split(".")[0] in PACKAGES:
                same = name.split(".")[0] == package
                if (not same and floor_of(name) >= floor_of(module)) or (same and floor_of(name) > floor_of(module)):
                    problems.append(f"{module} imports {name}, which is not below it")
            elif name in BANNED.get(package, ()):
                problems.append(f"{module} imports {name}")
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module, or a module importing itself (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ()) & graph.keys()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_import_goes_down_a_floor():
    assert forbidden_imports(import_graph(ROOT)) == []


def test_no_module_imports_its_importers():
    assert cycles(import_graph(ROOT)) == []


def test_the_checks_catch_an_upward_import_a_banned_library_and_a_circle(tmp_path):
    sources = {
        "aggregation/__init__.py": "",
        "aggregation/rule.py": "import simpy\nfrom fleet import emulator\n",
        "fleet/__init__.py": "",
        "fleet/emulator.py": "from fleet.pool import WorkerPool\n",
        "fleet/pool.py": "def f():\n    from fleet import emulator\n",
        "analysis/__init__.py": "",
        "analysis/report.py": "from scenarios.runner import run_scenario\n",
        "scenarios/__init__.py": "",
        "scenarios/runner.py": "from scenarios.sweep import run_sweep\n",
        "scenarios/sweep.py": "from scenarios.runner import run_scenario\n",
        "network_models/__init__.py": "",
    }
    for name, text in sources.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = import_graph(tmp_path)
    assert forbidden_imports(graph) == [
        "aggregation.rule imports fleet.emulator, which is not below it",
        "aggregation.rule imports simpy",
        "analysis.report imports scenarios.runner, which is not below it",
        "scenarios.runner imports scenarios.sweep, which is not below it",
    ]
    assert cycles(graph) == [["fleet.emulator", "fleet.pool"], ["scenarios.runner", "scenarios.sweep"]]
