"""The code's layout holds: no import cycle, Ray in one module, the runner imported by two.

The import graph is read from the source (every ``import`` statement, also those inside
functions, where most of this project's imports are; ``if TYPE_CHECKING:`` blocks are left out,
they never run), so a cycle that would only bite at run time on some path fails here.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "harness"


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path, name: str, known: dict[str, Path]) -> set[str]:
    """The modules (of any package) that ``path`` imports, anywhere in it."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                # ``from harness import store`` imports harness.store (its package harness is
                # already imported as its parent); ``from harness.x import f`` imports harness.x
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    known = _modules()
    return {
        name: {m for m in _imports(path, name, known) if m in known and m != name}
        for name, path in known.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                cycle = walk(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = walk(node)
            if cycle:
                return cycle
    return None


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import(tmp_path):
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    # an import inside a function counts; one under TYPE_CHECKING does not
    src = tmp_path / "m.py"
    src.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import harness.runner\n"
        "def f():\n    from harness import store\n    import harness.meter\n"
    )
    known = {"harness.store": src, "harness.meter": src, "harness.runner": src}
    assert _imports(src, "harness.m", known) >= {"harness.store", "harness.meter"}
    assert "harness.runner" not in _imports(src, "harness.m", known)


def test_no_import_cycle_among_harness_modules():
    graph = import_graph()
    assert len(graph) > 50  # the whole package was read
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_ray_is_imported_only_by_the_ray_launcher():
    known = _modules()
    importers = {
        name
        for name, path in known.items()
        if any(m == "ray" or m.startswith("ray.") for m in _imports(path, name, known))
    }
    assert importers == {"harness.launchers.ray"}


def test_only_the_cli_and_the_public_api_import_the_runner():
    importers = {name for name, deps in import_graph().items() if "harness.runner" in deps}
    assert importers <= {"harness", "harness.cli", "harness.commands.run"}
    assert "harness.commands.run" in importers and "harness" in importers


@pytest.mark.parametrize("layer", ["harness.sensors", "harness.workloads", "harness.engines"])
def test_lower_layers_know_nothing_of_launchers_or_the_runner(layer):
    graph = import_graph()
    for name, deps in graph.items():
        if name == layer or name.startswith(layer + "."):
            above = {d for d in deps if d.startswith(("harness.launchers", "harness.runner"))}
            assert not above, f"{name} imports {sorted(above)}"


#: writes that are not files the project produces: a worker's inherited descriptors in the fork
#: server, the kernel's /proc/self/clear_refs knob (harness.workloads.memory), and a model
#: server's own output stream, appended to by the server as it runs (harness.engines.server)
NOT_PROJECT_FILES = {
    "harness/launchers/forkserver.py",
    "harness/workloads/memory.py",
    "harness/engines/server.py",
}


def test_every_file_is_written_through_the_one_atomic_helper():
    """atomic.write_bytes (and replace_folder for a checkpoint folder; ``harness.store`` re-exports
    both) is the only writer."""
    import re

    writer = re.compile(
        r"os\.replace\(|os\.rename\(|\.rename\((?!columns)|\.replace\(path\)|\.write_text\("
        r"|\.write_bytes\(|open\([^)]*['\"][wa]b?['\"]|\.to_csv\([^)]*path|savefig\((?!buf)"
    )
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel in NOT_PROJECT_FILES or rel == "harness/atomic.py":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            through_helper = "store." in code or "atomic." in code or "write_bytes(self" in code
            if writer.search(code) and not through_helper:
                offenders.append(f"{rel}:{number}: {line.strip()}")
    assert not offenders, "files written beside store.write_bytes:\n" + "\n".join(offenders)


def test_only_the_gpu_device_layer_imports_the_vendor_libraries():
    known = _modules()
    importers = {
        name for name, path in known.items() if _imports(path, name, known) & {"pynvml", "amdsmi"}
    }
    assert importers == {"harness.sensors.gpu.nvidia", "harness.sensors.gpu.amd"}


#: the layers a workload stands on, and the workloads: none of them may import the report
BELOW_THE_REPORT = ("harness.workloads", "harness.models", "harness.engines", "harness.sensors")


def report_importers_below(graph: dict[str, set[str]], roots=BELOW_THE_REPORT) -> dict[str, set]:
    """Modules of ``roots``, or imported by them at any depth, that import ``harness.report``."""
    below = {m for m in graph if m.startswith(tuple(f"{r}." for r in roots)) or m in roots}
    todo = list(below)
    while todo:
        for dep in graph.get(todo.pop(), ()):
            if dep not in below:
                below.add(dep)
                todo.append(dep)
    out = {}
    for m in sorted(below):
        report = {
            d for d in graph.get(m, ()) if d == "harness.report" or d.startswith("harness.report.")
        }
        if report:
            out[m] = report
    return out


def test_the_report_check_finds_an_import_from_below():
    graph = {
        "harness.workloads.x": {"harness.helper"},
        "harness.helper": {"harness.report.stats"},
        "harness.report.stats": set(),
    }
    assert report_importers_below(graph) == {"harness.helper": {"harness.report.stats"}}
    assert report_importers_below({"harness.workloads.x": {"harness.stats"}}) == {}


def test_nothing_below_the_workloads_imports_the_report():
    offenders = report_importers_below(import_graph())
    assert not offenders, f"modules below the workloads import the report: {offenders}"


# ------------------------------------------------------- names compared outside their own module
#: an expression that holds a workload or engine name (a row's ``workload``, a case's ``type``...)
NAME_HOLDER = re.compile(r"workload|engine|kind|maker|technique|stage|type", re.I)
#: methods of a pandas column or a dict that compare or substitute a value
COMPARING_METHODS = {"isin", "eq", "ne", "fillna"}


def _names_in(node: ast.AST, names: set[str]) -> list[str]:
    """The registered names that ``node`` is, or holds as a literal tuple, list or set."""
    if isinstance(node, ast.Constant) and node.value in names:
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [e.value for e in node.elts if isinstance(e, ast.Constant) and e.value in names]
    return []


def name_comparisons(source: str, names: set[str], own: set[str] = frozenset()) -> list[str]:
    """Lines of ``source`` that decide by a workload's or engine's name (one of ``names`` other
    than the module's ``own``): a comparison or ``isin`` against an expression holding such a
    name, a mapping keyed by two or more of them, a loop over them."""
    names = set(names) - set(own)
    found = []
    for node in ast.walk(ast.parse(source)):
        hit: list[str] = []
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            literal = [n for o in operands for n in _names_in(o, names)]
            others = [ast.unparse(o) for o in operands if not _names_in(o, names)]
            if literal and any(NAME_HOLDER.search(o) for o in others):
                hit = literal
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in COMPARING_METHODS
            and NAME_HOLDER.search(ast.unparse(node.func.value))
        ):
            hit = [n for a in node.args for n in _names_in(a, names)]
        elif isinstance(node, ast.Dict):
            keys = [k.value for k in node.keys if isinstance(k, ast.Constant) and k.value in names]
            hit = keys if len(keys) >= 2 else []
        elif isinstance(node, (ast.For, ast.comprehension)):
            literal = _names_in(node.iter, names)
            hit = literal if len(literal) >= 2 else []
        if hit:
            found.append(f"{node.lineno}: {ast.unparse(node).splitlines()[0][:100]}")
    return sorted(set(found), key=lambda line: int(line.split(":")[0]))


def test_the_name_check_finds_each_way_of_deciding_by_name():
    names = {"infer", "serve", "train", "transformers"}
    src = (
        'a = row["workload"] == "infer"\n'
        'b = kind in ("infer", "serve")\n'
        'c = frame[frame["workload"].isin(["train"])]\n'
        'd = {"infer": 1, "serve": 2}\n'
        'for workload in ("infer", "serve"):\n    pass\n'
        'e = f["engine"].fillna("transformers")\n'
        # a metric or a data split of the same spelling is no workload
        'f = split in ("train", "test")\n'
        'g = metric == "infer"\n'
    )
    found = name_comparisons(src, names)
    assert [int(line.split(":")[0]) for line in found] == [1, 2, 3, 4, 5, 7]
    # a module may decide by its own name
    assert name_comparisons('x = spec["type"] == "infer"\n', names, own={"infer"}) == []


def test_no_workload_or_engine_is_told_by_its_name_outside_its_module_and_the_registry():
    from harness.engines import REGISTRY as ENGINES
    from harness.workloads import REGISTRY as WORKLOADS

    names = set(WORKLOADS) | set(ENGINES)
    registries = {PACKAGE / "workloads" / "__init__.py", PACKAGE / "engines" / "__init__.py"}
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path in registries:
            continue
        own = {path.stem} if path.parent.name in ("workloads", "engines") else set()
        for line in name_comparisons(path.read_text(encoding="utf-8"), names, own):
            offenders.append(f"{path.relative_to(ROOT).as_posix()}:{line}")
    assert not offenders, "decided by a registered name:\n" + "\n".join(offenders)


def test_the_layers_below_the_workloads_import_the_one_store_module_they_need():
    """A workload, model, engine or sensor writes through harness.atomic; the results folder's
    module (harness.store: manifest facts, the measurements table) is the runner's and the
    report's."""
    graph = import_graph()
    offenders = {
        name: "harness.store"
        for name, deps in graph.items()
        if name.startswith(tuple(f"{r}." for r in BELOW_THE_REPORT)) and "harness.store" in deps
    }
    assert not offenders, f"modules below the report import harness.store: {offenders}"
