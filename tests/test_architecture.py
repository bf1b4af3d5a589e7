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


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(u):
        state[u] = "open"
        stack.append(u)
        for v in sorted(graph.get(u, ())):
            if state.get(v) == "open":
                return stack[stack.index(v):] + [v]
            if v not in state:
                found = visit(v)
                if found:
                    return found
        stack.pop()
        state[u] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycle_between_modules():
    """Module-level imports form a DAG (a package's __init__ importing its own submodules is not a cycle)."""
    graph = {m: {d for d in _imports(p, True) if not d.startswith(m + ".")} for m, p in MODULES.items()}
    assert _find_cycle(graph) is None, f"import cycle: {' -> '.join(_find_cycle(graph))}"


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
    assert _find_cycle(graph) is None, f"import cycle: {' -> '.join(_find_cycle(graph))}"


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
