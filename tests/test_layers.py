"""The import structure: every import (lazy ones too) goes down the layers, and no file imports
itself back through others. Read from the source with ``ast``: nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("benchmark", "methods", "reports", "core")

# Each group and the groups it may import (its own included). Top to bottom: the CLI and commands,
# launch (runner, isolation, recipe, factory), methods, training, models, data / measurement,
# config, the shared utilities. The reporter reads only result files.
CORE = {"core", "benchmark.config"}
ALLOWED = {
    "core": {"core"},
    "benchmark.config": CORE,
    "benchmark.data": CORE | {"benchmark.data"},
    "benchmark.measure": CORE | {"benchmark.measure"},
    "benchmark.models": CORE | {"benchmark.data", "benchmark.models"},
    "benchmark.training": CORE | {"benchmark.data", "benchmark.models", "benchmark.training"},
    "methods": CORE | {"benchmark.data", "benchmark.models", "benchmark.training", "benchmark.measure", "methods"},
}
ALLOWED["benchmark.launch"] = set().union(*ALLOWED.values()) | {"benchmark.launch"}
ALLOWED["benchmark.commands"] = ALLOWED["benchmark.launch"] | {"benchmark.commands"}
ALLOWED["benchmark.cli"] = ALLOWED["benchmark.commands"] | {"benchmark.cli", "reports"}
ALLOWED["reports"] = {"reports", "core"}


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def group(module: str) -> str:
    if module.startswith("benchmark."):
        sub = module.split(".")[1]
        return "benchmark.config" if sub in ("config", "config_checks", "settings") else f"benchmark.{sub}"
    return module.split(".")[0]


def imports(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules ``module`` imports anywhere in its file (top level or inside a function)."""
    is_pkg = path.name == "__init__.py"
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else [])) \
                if node.level else node.module
            subs = [f"{target}.{a.name}" for a in node.names]
            names = [s for s in subs if s in known] or [target]
        else:
            continue
        out |= {n for n in names if n in known}
    return out - {module}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {m: imports(m, p, known) for m, p in known.items()}


def test_every_import_goes_down_the_layers():
    bad = [f"{m} imports {d}" for m, deps in graph().items() for d in sorted(deps)
           if group(d) not in ALLOWED[group(m)]]
    assert not bad, "\n".join(bad)


def test_no_file_imports_itself_back():
    g = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    assert not cycles, cycles


def test_the_layer_check_sees_lazy_and_relative_imports(tmp_path):
    """The check itself: a lazy relative import of the runner from the trainer would be caught."""
    known = modules()
    fake = tmp_path / "trainer.py"
    fake.write_text("def f():\n    from ..launch import runner\n    from ..launch.recipe import x\n")
    deps = imports("benchmark.training.trainer", fake, known)
    assert deps == {"benchmark.launch.runner", "benchmark.launch.recipe"}
    assert all(group(d) not in ALLOWED["benchmark.training"] for d in deps)


def test_modules_and_functions_stay_small():
    """A newcomer reads a module in one sitting: under 400 lines, every function under 60."""
    big = []
    for m, path in modules().items():
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) > 400:
            big.append(f"{m}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                big.append(f"{m}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not big, big
