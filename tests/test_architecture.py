"""The shape of the code base: import graph, file sizes, where decisions are made.

Issue 13's structural rules, checked on the source so they cannot silently erode:
no import cycle, no file in fastvit/ over 500 lines, the model built from parts
(no implementation name read by Block, no kernel import inside a forward).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
from pathlib import Path

import pytest
import torch

import fastvit
from fastvit.parts import Parts, resolve_parts

ROOT = Path(fastvit.__file__).parent
SOURCES = sorted(ROOT.rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in SOURCES}


def _imports(path: Path, module_level_only: bool) -> set[str]:
    """fastvit modules ``path`` imports (relative imports resolved; ``from pkg import name`` counts
    the submodule ``pkg.name`` when it is one)."""
    tree = ast.parse(path.read_text())
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for candidate in [target] + [f"{target}.{a.name}" for a in node.names]:
                if candidate in MODULES and candidate != name:
                    found.add(candidate)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in MODULES and a.name != name)
    return found


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one module (or a module importing itself)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []

    def visit(u):
        index[u] = low[u] = len(index)
        stack.append(u)
        on_stack.add(u)
        for v in sorted(graph.get(u, ())):
            if v not in index:
                visit(v)
                low[u] = min(low[u], low[v])
            elif v in on_stack:
                low[u] = min(low[u], index[v])
        if low[u] == index[u]:
            component = []
            while True:
                v = stack.pop()
                on_stack.discard(v)
                component.append(v)
                if v == u:
                    break
            if len(component) > 1 or u in graph.get(u, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def _package_init_edge(module: str, dep: str) -> bool:
    """A package's ``__init__`` importing its own submodules is how packages are built, not a cycle."""
    return dep.startswith(module + ".") and MODULES[module].name == "__init__.py"


def import_graph(module_level_only: bool = False) -> dict[str, set[str]]:
    """fastvit module -> the fastvit modules it imports, lazy imports inside functions included."""
    return {m: {d for d in _imports(p, module_level_only) if not _package_init_edge(m, d)} for m, p in MODULES.items()}


def test_strongly_connected_finds_a_cycle():
    """The cycle finder itself: a lazy back-edge makes a cycle, a DAG has none."""
    assert _strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _strongly_connected({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_lazy_imports_are_seen(tmp_path):
    """An import inside a function counts as an edge (the lazy cycles the issue found)."""
    tree = ast.parse("def f():\n    from fastvit.kernels import ops\n")
    assert any(isinstance(n, ast.ImportFrom) and n.module == "fastvit.kernels" for n in ast.walk(tree))
    assert "fastvit.kernels.ops" in _imports(MODULES["fastvit.kernels"], False)


def test_no_import_cycle_between_modules():
    """No import cycle between fastvit's modules, counting every import anywhere in a file (inside
    functions too). The failure lists each strongly connected component."""
    cycles = _strongly_connected(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_no_import_cycle_between_packages_even_through_lazy_imports():
    """Collapsed to fastvit's parts (model, factory, checkpoints, layers, kernels, ...), every import --
    lazy ones inside functions included -- points one way: e.g. the model never imports the loaders."""
    def unit(module: str) -> str:
        return ".".join(module.split(".")[:2])

    graph: dict[str, set[str]] = {}
    for m, p in MODULES.items():
        if m == "fastvit":  # the package's facade imports everything by design
            continue
        graph.setdefault(unit(m), set()).update(unit(d) for d in _imports(p, False) if unit(d) != unit(m) and d != "fastvit")
    cycles = _strongly_connected(graph)
    assert not cycles, f"import cycles between packages: {cycles}"


LIBRARY = ("fastvit.model", "fastvit.layers", "fastvit.kernels", "fastvit.dispatch", "fastvit.checkpoints")
TOOLS = ("fastvit.bench", "fastvit.analysis", "fastvit.train", "fastvit.gpucheck", "fastvit.compare")


def _under(module: str, prefixes) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_library_does_not_import_the_tools():
    """model, layers, kernels, dispatch and checkpoints never import bench, analysis, train, gpucheck
    or compare -- not even lazily -- so the tools stay outside the library's import graph."""
    offenders = sorted(f"{m} -> {d}" for m, deps in import_graph().items() if _under(m, LIBRARY)
                       for d in deps if _under(d, TOOLS))  # fmt: skip
    assert not offenders, offenders


def test_kernel_op_files_follow_the_layer_rules():
    """No module ``__getattr__`` in an op file, and no import of another kernel file's ``_private`` name."""
    kernels = ROOT / "kernels"
    offenders = []
    for path in sorted(kernels.glob("*.py")):
        tree = ast.parse(path.read_text())
        if path.name != "__init__.py" and any(isinstance(n, ast.FunctionDef) and n.name == "__getattr__"
                                              for n in tree.body):  # fmt: skip
            offenders.append(f"{path.name}: module __getattr__")
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fastvit"):
                offenders += [f"{path.name}: {node.module}.{a.name}" for a in node.names
                              if a.name.startswith("_") and not a.name.startswith("__")]
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.attr.startswith("_") \
                    and not node.attr.startswith("__") and (kernels / f"{node.value.id}.py").exists():
                offenders.append(f"{path.name}: {node.value.id}.{node.attr}")
    assert not offenders, offenders


def test_model_does_not_import_the_checkpoint_loaders():
    assert not any(d.startswith("fastvit.checkpoints") for d in _imports(MODULES["fastvit.model"], False))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_file_over_500_lines(path):
    assert len(path.read_text().splitlines()) <= 500


def _forward_functions():
    for path in SOURCES:
        if path.parts[-2] not in ("layers", "fastvit"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name == "forward":
                yield path, node


def test_no_import_inside_a_layer_forward():
    """Kernels are bound when a layer is built (fastvit.layers.kernel_ops), never imported in forward."""
    offenders = [f"{p.relative_to(ROOT)}:{n.lineno}" for p, n in _forward_functions()
                 if any(isinstance(x, (ast.Import, ast.ImportFrom)) for x in ast.walk(n))]
    assert not offenders, offenders


def test_block_receives_layers_not_implementation_names():
    params = inspect.signature(fastvit.Block).parameters
    assert {"norm_layer", "attn_layer", "mlp_layer"} <= set(params)
    assert not any(name.endswith("_impl") or name == "cfg" for name in params)
    source = inspect.getsource(fastvit.Block) + inspect.getsource(fastvit.VisionTransformer)
    assert "_impl" not in source.replace("attn_impl=", ""), "the model reads an implementation name"


def test_injected_parts_are_the_layers_the_model_builds():
    """A custom Parts goes straight into the blocks: the model makes no choice of its own."""
    cfg = fastvit.ViTConfig(img_size=32, patch_size=16, embed_dim=32, depth=2, num_heads=2, num_classes=3,
                            norm_impl="torch")

    class MarkedNorm(torch.nn.LayerNorm):
        pass

    parts = dataclasses.replace(resolve_parts(cfg), block_norm_layer=lambda dim: MarkedNorm(dim, eps=1e-6))
    model = fastvit.VisionTransformer(cfg, parts=parts)
    assert all(type(b.norm1) is MarkedNorm and type(b.norm2) is MarkedNorm for b in model.blocks)
    assert type(model.norm) is torch.nn.LayerNorm
    plain = fastvit.VisionTransformer(cfg)
    assert list(model.state_dict()) == list(plain.state_dict())
    with pytest.raises(TypeError, match="fastvit.parts.Parts"):
        fastvit.VisionTransformer(cfg, parts={"norm_layer": None})


def test_parts_describe_names_every_part():
    described = resolve_parts(fastvit.ViTConfig(norm_impl="torch", linear_impl="torch", attn_impl="sdpa")).describe()
    assert set(described) == {f.name for f in dataclasses.fields(Parts)}
    assert described["mlp_layer"] == "Mlp" and described["attn_layer"] == "Attention"
