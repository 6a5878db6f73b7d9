"""The house rules: imports point down the layers, no cycles, no private doors.

Read from the source (every ``import`` statement, also those inside
functions, since a late import is still a dependency), so the test needs
no optional package installed. The checker is tested on small made-up
packages first, so it is known to fail on each fault it looks for.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "tomolab"

#: lowest first; a module may import its own package and anything in a lower layer
LAYERS = [
    {"errors", "arrays", "devices", "checks", "sanity"},  # base: what everything may use
    {"io"},
    {"prep"},
    {"recon"},
    {"center"},
    {"sweep"},
    {"engine", "cluster"},  # cluster: starts dask clusters (base only); api and cli use clients
    {"data"},
    {"api"},
    {"live"},  # live sources and reconstruction: build on io, recon, data and api
    {"viz"},
    {"widgets", "cli"},
    {"__main__"},  # python -m tomolab: runs the cli
]
#: stand apart: may use the base layer only, and nothing above imports them
APART = {"hub", "testing"}
#: the package's own ``__init__`` only maps names to modules (imported on first use)
TOP = "tomolab"


def unit(module: str) -> str:
    """``tomolab.recon.gridrec`` → ``recon``; ``tomolab.cli`` → ``cli``."""
    parts = module.split(".")
    return TOP if len(parts) == 1 else parts[1]


def level(name: str) -> int | None:
    for index, members in enumerate(LAYERS):
        if name in members:
            return index
    return None


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports(source: str, module: str, *, is_package: bool):
    """``(target module, imported name or None, line)`` for every tomolab import."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".")
                base = base if is_package else base[:-1]
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "tomolab" or target.startswith("tomolab."):
                for alias in node.names:
                    found.append((target, alias.name, node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "tomolab" or alias.name.startswith("tomolab."):
                    found.append((alias.name, None, node.lineno))
    return found


def graph(root: Path):
    """``{module: [(target, name, line)]}`` for every module under ``root``."""
    edges = {}
    for path in sorted(root.rglob("*.py")):
        module = module_name(path, root)
        edges[module] = imports(path.read_text(), module, is_package=path.name == "__init__.py")
    return edges


def resolve(target: str, name: str | None, modules) -> str:
    """``from tomolab.x import y`` names module ``tomolab.x.y`` when that is a module."""
    if name and f"{target}.{name}" in modules:
        return f"{target}.{name}"
    return target


def faults(edges) -> list[str]:
    """Every upward import, cross-package private door and import cycle."""
    found = []
    modules = set(edges)
    for module, targets in edges.items():
        here = unit(module)
        for target, name, line in targets:
            full = resolve(target, name, modules)
            there = unit(full)
            where = f"{module}:{line} imports {full}" + (f" ({name})" if name else "")
            if there == here or there == TOP and name in (None, "__version__"):
                continue
            if level(here) == level(there) == 0 and not name.startswith("_"):
                continue  # the base modules use each other (a cycle among them is still caught)
            if there == TOP:
                found.append(f"{where}: use the module that defines {name}, not the package root")
                continue
            if here in APART:
                if level(there) != 0:
                    found.append(f"{where}: {here} stands apart and may use the base layer only")
            elif there in APART:
                found.append(f"{where}: nothing may depend on {there}")
            elif here != TOP and (level(here) is None or level(there) is None):
                found.append(f"{where}: {here if level(here) is None else there} is in no layer")
            elif here != TOP and level(there) >= level(here):
                found.append(f"{where}: {there} is not below {here}")
            private = [p for p in full.split(".")[1:] if p.startswith("_")]
            if private or (name and name.startswith("_")):
                found.append(f"{where}: a private name across packages; make it public where it lives")
    found += [f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(edges)]
    return found


def cycles(edges) -> list[list[str]]:
    """Strongly connected groups of modules (Tarjan), each as a loop of names."""
    modules = set(edges)
    succ = {m: sorted({resolve(t, n, modules) for t, n, _ in targets} & modules - {m})
            for m, targets in edges.items()}
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in succ[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group) + [sorted(group)[0]])

    for v in sorted(succ):
        if v not in index:
            visit(v)
    return groups


# --- the checker, on made-up packages ----------------------------------------------------

def _write(tmp_path: Path, files: dict) -> Path:
    root = tmp_path / "tomolab"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


CLEAN = {
    "__init__.py": "from tomolab.errors import ParameterError\n",
    "errors.py": "",
    "arrays.py": "from tomolab.errors import ParameterError\n",
    "devices.py": "from tomolab.arrays import array_module\n",
    "recon/__init__.py": "from tomolab.recon.fbp import fbp\n",
    "recon/fbp.py": "from tomolab.arrays import array_module\nfrom . import filters\n",
    "recon/filters.py": "",
    "engine/__init__.py": "def run():\n    from tomolab.recon import fbp\n",
    "hub/__init__.py": "from tomolab.errors import ParameterError\n",
}


def test_the_checker_passes_a_clean_house(tmp_path):
    assert faults(graph(_write(tmp_path, CLEAN))) == []


@pytest.mark.parametrize("change, expected", [
    ({"recon/fbp.py": "def f():\n    from tomolab.engine import run\n"}, "engine is not below recon"),
    ({"recon/filters.py": "from tomolab.engine import run\n",
      "engine/__init__.py": "from tomolab.recon.filters import x\n"}, "import cycle"),
    ({"engine/__init__.py": "from tomolab.recon._kernels import k\n"}, "private name"),
    ({"engine/__init__.py": "from tomolab.recon.fbp import _check\n"}, "private name"),
    ({"hub/__init__.py": "from tomolab.recon import fbp\n"}, "stands apart"),
    ({"engine/__init__.py": "import tomolab.hub\n"}, "nothing may depend on hub"),
    ({"recon/fbp.py": "from tomolab import reconstruct\n"}, "not the package root"),
    ({"recon/fbp.py": "from .. import engine\n"}, "engine is not below recon"),
    ({"newthing/__init__.py": "from tomolab.recon import fbp\n"}, "is in no layer"),
    ({"errors.py": "from tomolab.devices import x\n"}, "import cycle"),
])
def test_the_checker_finds_each_fault(tmp_path, change, expected):
    found = faults(graph(_write(tmp_path, {**CLEAN, **change})))
    assert any(expected in fault for fault in found), found


# --- the real package -------------------------------------------------------------------

def test_every_package_is_in_a_layer():
    units = {unit(module_name(p, PACKAGE)) for p in PACKAGE.rglob("*.py")}
    placed = set().union(*LAYERS) | APART | {TOP}
    assert units <= placed, f"place {sorted(units - placed)} in LAYERS (tests/test_layers.py)"


def test_imports_point_down_without_cycles_or_private_doors():
    found = faults(graph(PACKAGE))
    assert not found, "\n".join(found)


def _notebook_code():
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        for cell in cells:
            if cell["cell_type"] == "code":
                yield path.name, "".join(cell["source"])


def _doc_code():
    for path in sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]:
        text = path.read_text()
        for block in text.split("```")[1::2]:
            if block.startswith(("python", "{code-cell}", "py")):
                yield path.name, block.split("\n", 1)[1] if "\n" in block else ""


@pytest.mark.parametrize("where, code", list(_notebook_code()) + list(_doc_code()))
def test_notebooks_and_docs_use_public_names(where, code):
    # IPython magics and shell escapes are not Python
    source = "\n".join(line for line in code.splitlines()
                       if not line.lstrip().startswith(("%", "!", ">>>", "...")))
    try:
        found = imports(source, "user", is_package=False)
    except SyntaxError:  # a fragment in the docs: its import lines alone
        found = [hit for line in source.splitlines() if line.strip().startswith(("import ", "from "))
                 for hit in imports(line.strip().rstrip("(\\"), "user", is_package=False)]
    for target, name, line in found:
        private = [p for p in target.split(".") if p.startswith("_")]
        assert not private and not (name or "").startswith("_"), f"{where}: {target} {name}"


def test_scripts_around_the_package_use_public_names():
    """Binder's postBuild, the deployment files, CI scripts and benchmarks import public names."""
    private = re.compile(r"\btomolab(?:\.[A-Za-z]\w*)*\._\w+|\bfrom tomolab(?:\.\w+)* import .*\b_[a-z]\w*")
    hits = []
    for folder in ("binder", "deploy", ".ci", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.is_file() and path.suffix in ("", ".py", ".sh", ".yml", ".yaml", ".cfg", ".txt"):
                for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                    if private.search(line):
                        hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not hits, "\n".join(hits)
