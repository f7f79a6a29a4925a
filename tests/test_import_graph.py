"""emojax's import graph: no circle, and imports run down the layers (issue 26).

The graph is read from the source with `ast`, never by importing it. Nodes are the modules of
emojax/ (a package is its `__init__.py`). An edge A -> B is any import of B in A, at the top
or inside a function (a lazy import is still a dependency), under `if TYPE_CHECKING:` too:
`import emojax.b`, `from emojax.b import name` (an edge to `emojax.b.name` when that is a
module, else to `emojax.b`), `from emojax import b`, and relative imports. An import of an
emojax module that does not exist is reported as such (not read as an import of its parent).

Packages. A package's `__init__.py` importing its own submodules is a re-export, not a
dependency of the package on them, so those edges are dropped; in their place, whoever
imports the package depends on everything the `__init__.py` imports (its re-exports count as
imports of the package). So `emojax/sweep/__init__.py` re-exporting `sweep.run` is no circle,
but `sweep.standalone` importing `emojax.pipeline`, whose `__init__.py` imports
`pipeline.point`, which imports `emojax.sweep.standalone`, is one.

Layers. `LAYERS` lists them from the foundation up, as README.md's "Code layout" shows them;
a module belongs to the layer of the longest prefix listed. An import from a lower layer up to
a higher one is allowed only inside a function, with its reason in a comment on the same or
the preceding line, and at most `MAX_UPWARD` times in the package.
"""

from __future__ import annotations

import ast
import dataclasses
import io
import pathlib
import tokenize

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("foundation", ("config", "params", "validate", "stats", "results")),
    ("model core", ("layers", "model", "interventions", "generate")),
    ("formats", (
        "checkpoint", "safetensors_files", "gguf", "models", "compile_cache", "loading",
        "control_vector", "vectors",
        "",  # "": emojax/__init__.py, which re-exports the core and loading
    )),
    ("scale", ("parallel", "sharding")),
    ("analysis", (
        "readouts", "concepts", "redteam", "refusal_labels", "extract", "sweep", "probes",
        "metrics", "dial", "diagnostics", "breakpoint", "calibration",
        "validation",  # the validation arms (DESIGN.md, section 1)
    )),
    ("organisms", ("zoo", "tune", "safety_eval", "safety_model")),
    ("pipeline", ("pipeline", "report", "plots", "workdir")),
    ("script runs", (
        "validation.study",  # the known-answer study runs the pipeline over seeds
        "extract.run", "probes.run", "sweep.standalone", "run_plan", "benchmark",
    )),
)  # fmt: skip
MAX_UPWARD = 3


@dataclasses.dataclass(frozen=True)
class Import:
    """One import statement of an emojax module."""

    source: str  # the importing module
    targets: tuple[str, ...]  # the emojax modules it names
    line: int
    lazy: bool  # inside a function
    commented: bool  # a comment on its line(s) or the line before


@dataclasses.dataclass
class Graph:
    modules: dict[str, pathlib.Path]  # dotted name -> file
    packages: set[str]
    imports: list[Import]
    missing: list[str]  # imports of emojax modules that do not exist ("file:line name")

    def where(self, imp: Import) -> str:
        """`emojax/x.py:line` of an import."""
        base = self.modules["emojax"].parents[1]
        return f"{self.modules[imp.source].relative_to(base)}:{imp.line}"

    def edges(self) -> dict[str, set[str]]:
        """Module -> modules it depends on, with the package rule of the module docstring."""
        out: dict[str, set[str]] = {m: set() for m in self.modules}
        for imp in self.imports:
            for t in imp.targets:
                if imp.source in self.packages and t.startswith(imp.source + "."):
                    continue  # a package re-exporting its own submodule
                out[imp.source] |= {t} | self.reexports(t)
        return out

    def reexports(self, module: str) -> set[str]:
        """The own submodules a package's `__init__.py` imports (transitively); {} otherwise."""
        if module not in self.packages:
            return set()
        own = {
            t
            for imp in self.imports
            if imp.source == module
            for t in imp.targets
            if t.startswith(module + ".")
        }
        return own.union(*(self.reexports(t) for t in own))


def module_names(package_dir: pathlib.Path) -> tuple[dict[str, pathlib.Path], set[str]]:
    base = package_dir.parent
    modules, packages = {}, set()
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(base).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
            packages.add(".".join(parts))
        modules[".".join(parts)] = path
    return modules, packages


def comment_lines(source: str) -> tuple[set[int], set[int]]:
    """(lines holding a comment, lines holding only a comment)."""
    any_comment, only = set(), set()
    lines = source.splitlines()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            row = tok.start[0]
            any_comment.add(row)
            if lines[row - 1].lstrip().startswith("#"):
                only.add(row)
    return any_comment, only


def read_graph(package_dir: pathlib.Path) -> Graph:
    modules, packages = module_names(package_dir)
    imports, missing = [], []
    for name, path in modules.items():
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source, filename=str(path))
        with_comment, comment_only = comment_lines(source)
        here = name if name in packages else name.rpartition(".")[0]
        for node, lazy in _imports(tree):
            targets = _targets(node, here, modules)
            missing += [f"{path.name}:{node.lineno} {t[1:]}" for t in targets if t[0] == "?"]
            targets = tuple(t for t in targets if t[0] != "?")
            if not targets:
                continue
            span = set(range(node.lineno, (node.end_lineno or node.lineno) + 1))
            commented = bool(span & with_comment) or node.lineno - 1 in comment_only
            imports.append(Import(name, targets, node.lineno, lazy, commented))
    return Graph(modules, packages, imports, missing)


def _imports(tree: ast.AST):
    """(import node, inside a function) for every import statement of a module."""
    stack = [(tree, False)]
    while stack:
        node, in_function = stack.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                yield child, in_function
            lazy = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            stack.append((child, lazy))


def _targets(node: ast.Import | ast.ImportFrom, here: str, modules) -> tuple[str, ...]:
    """The emojax modules an import statement names ("?name" for one that does not exist)."""
    if isinstance(node, ast.Import):
        return tuple(sorted({_module(a.name, modules) for a in node.names} - {None}))
    if node.level:  # relative: `from . import x`, `from ..y import z`
        parts = here.split(".")
        parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join(parts + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    out = set()
    for alias in node.names:
        if f"{base}.{alias.name}" in modules:
            out.add(f"{base}.{alias.name}")  # `from emojax import sweep`: the module
        else:
            out.add(_module(base, modules))  # a name defined in `base`
    return tuple(sorted(out - {None}))


def _module(name: str, modules) -> str | None:
    """`name` if it is an emojax module, "?name" if it should be one, None outside emojax."""
    if name != "emojax" and not name.startswith("emojax."):
        return None
    return name if name in modules else "?" + name


def layer_of(module: str) -> int:
    """Index in LAYERS of the longest listed prefix of `module`."""
    rel = module.removeprefix("emojax").removeprefix(".")
    best, index = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (rel == p or (p and rel.startswith(p + "."))) and len(p) > best:
                best, index = len(p), i
    assert index is not None, f"{module} is in no layer: add it to LAYERS and the README"
    return index


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One circle of the graph (a list of modules, first = last), or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    for root in sorted(edges):
        if root in state:
            continue
        path, stack = [root], [iter(sorted(edges[root]))]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(edges.get(nxt, ()))))
    return None


def upward(graph: Graph) -> list[Import]:
    """Import statements naming (directly or through a package's re-exports) a higher layer."""
    out = []
    for imp in graph.imports:
        deps = set()
        for t in imp.targets:
            if not (imp.source in graph.packages and t.startswith(imp.source + ".")):
                deps |= {t} | graph.reexports(t)
        if any(layer_of(t) > layer_of(imp.source) for t in deps):
            out.append(imp)
    return out


def _where(graph: Graph, source: str, target: str) -> str:
    """Where `source` imports `target` (directly or through a package that re-exports it)."""
    for imp in graph.imports:
        if imp.source == source and any(
            target == t or target in graph.reexports(t) for t in imp.targets
        ):
            return graph.where(imp)
    return source


# ------------------------------------------------------------------------------ the package


GRAPH = read_graph(ROOT / "emojax")


def test_the_graph_is_read():
    g = GRAPH
    assert not g.missing, f"imports of emojax modules that do not exist: {g.missing}"
    assert len(g.modules) > 90 and {"emojax", "emojax.sweep", "emojax.pipeline"} <= g.packages
    edges = g.edges()
    assert {"emojax.config", "emojax.interventions", "emojax.params"} <= edges["emojax.model"]
    # `from emojax import sweep` names the package, and through it what it re-exports.
    assert "emojax.sweep.run" in edges["emojax.calibration.random_arms"]
    assert not edges["emojax"], "emojax/__init__.py only re-exports its own submodules"


def test_every_module_has_a_layer():
    for m in GRAPH.modules:
        layer_of(m)
    assert LAYERS[layer_of("emojax.sweep.standalone")][0] == "script runs"  # longest prefix
    assert LAYERS[layer_of("emojax.sweep.run")][0] == "analysis"
    with pytest.raises(AssertionError, match="emojax.new_module is in no layer"):
        layer_of("emojax.new_module")  # "" stands for the package itself, not a default


def test_no_import_circle():
    edges = GRAPH.edges()
    cycle = find_cycle(edges)
    if cycle:
        steps = "\n  ".join(
            f"{a} -> {b}  ({_where(GRAPH, a, b)})" for a, b in zip(cycle, cycle[1:], strict=False)
        )
        raise AssertionError(f"import circle:\n  {steps}")


def test_imports_run_down_the_layers():
    up = upward(GRAPH)
    listed = "\n  ".join(
        f"{GRAPH.where(i)} ({LAYERS[layer_of(i.source)][0]} -> "
        f"{', '.join(t for t in i.targets)}){'' if i.lazy else ' TOP-LEVEL'}"
        f"{'' if i.commented else ' NO COMMENT'}"
        for i in up
    )
    assert all(i.lazy and i.commented for i in up), (
        "an upward import must sit in a function with its reason in a comment:\n  " + listed
    )
    assert len(up) <= MAX_UPWARD, f"{len(up)} upward imports (at most {MAX_UPWARD}):\n  {listed}"


# --------------------------------------------------------------- the checker on small trees


def _tree(tmp_path: pathlib.Path, files: dict[str, str]) -> Graph:
    for rel, text in files.items():
        path = tmp_path / "emojax" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return read_graph(tmp_path / "emojax")


def test_a_direct_circle_is_found(tmp_path):
    g = _tree(tmp_path, {
        "__init__.py": "",
        "a.py": "from emojax.b import f\nimport numpy\nfrom emojax.gone import x\n",
        "b.py": "def f():\n    from emojax import a  # lazy, still a circle\n",
    })  # fmt: skip
    assert g.missing == ["a.py:3 emojax.gone"]
    assert find_cycle(g.edges()) in (["emojax.a", "emojax.b", "emojax.a"],
                                     ["emojax.b", "emojax.a", "emojax.b"])  # fmt: skip


def test_a_reexport_is_no_circle_but_a_way_back_through_the_package_is(tmp_path):
    files = {
        "__init__.py": "",
        "sweep/__init__.py": "from emojax.sweep.run import run_sweep\nfrom . import tools\n",
        "sweep/run.py": "from emojax.sweep import tools\ndef run_sweep(): ...\n",
        "sweep/tools.py": "X = 1\n",
        "pipeline/__init__.py": "from emojax.pipeline.point import run\n",
        "pipeline/point.py": "from .. import sweep  # relative\ndef run(): ...\n",
    }
    g = _tree(tmp_path, files)
    assert find_cycle(g.edges()) is None
    assert g.edges()["emojax.pipeline.point"] >= {"emojax.sweep.run", "emojax.sweep.tools"}
    (tmp_path / "emojax/sweep/tools.py").write_text("def f():\n    import emojax.pipeline\n")
    cycle = find_cycle(read_graph(tmp_path / "emojax").edges())
    assert cycle and "emojax.pipeline.point" in cycle and "emojax.sweep.tools" in cycle


def test_upward_imports_are_counted_with_their_comments(tmp_path):
    g = _tree(tmp_path, {
        "__init__.py": "",
        "config.py": (
            "def f():\n"
            "    # the model is needed only here\n"
            "    from emojax.model import forward\n"
            "def g():\n"
            "    from emojax import loading\n"
        ),
        "model.py": "from .loading import x  # top level, relative\n",
        "loading.py": "x = 1\n",
    })  # fmt: skip
    up = {(i.source, i.line): (i.lazy, i.commented) for i in upward(g)}
    assert up == {
        ("emojax.config", 3): (True, True),
        ("emojax.config", 5): (True, False),
        ("emojax.model", 1): (False, True),
    }
