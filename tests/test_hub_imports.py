"""fastvit.checkpoints imports one way, lazy imports included: the Hugging Face families through
one table (hf_families) to one module each, the timm ViT converter to its hybrid twin, never back."""

from __future__ import annotations

import ast
from pathlib import Path

import fastvit.checkpoints as checkpoints
from fastvit.checkpoints import hf_clip, hf_dinov2, hf_families, hf_siglip

PKG = Path(checkpoints.__file__).parent


def _imports(path: Path) -> set[str]:
    """Sibling modules of fastvit.checkpoints that ``path`` imports, anywhere in it (functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(a.name for a in node.names)
    return {m for m in found if (PKG / f"{m}.py").is_file()}


def _cycle(graph):
    state, stack = {}, []

    def visit(u):
        state[u] = "open"
        stack.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == "open":
                return stack[stack.index(v):] + [v]
            if v not in state and (found := visit(v)):
                return found
        stack.pop()
        state[u] = "done"
        return None

    return next((c for u in sorted(graph) if u not in state and (c := visit(u))), None)


def test_checkpoint_modules_import_one_way_even_lazily():
    graph = {p.stem: _imports(p) - {p.stem} for p in PKG.glob("*.py") if p.stem != "__init__"}
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph))}"
    families = {"hf_dinov2", "hf_clip", "hf_siglip"}
    for family in families:  # a family module knows neither the table nor the entries
        assert not graph[family] & {"hf_families", "hf_config", "huggingface", "load"}, family
    assert "timm" not in graph["timm_hybrid"]


def test_one_table_of_families():
    assert set(hf_families.FAMILIES.values()) == {hf_clip, hf_dinov2, hf_siglip}
    assert set(hf_families.MODEL_TYPES) == {t for m in (hf_clip, hf_dinov2, hf_siglip) for t in m.MODEL_TYPES}
    assert hf_families.family_of(["vision_model.embeddings.class_embedding", "visual_projection.weight"]) == "clip"
    assert hf_families.family_of(["blocks.0.attn.qkv.weight"]) == "vit"


def test_config_model_types_are_the_tables():
    from fastvit.checkpoints import hf_config

    assert set(hf_config.MODERN_MODEL_TYPES) == set(hf_families.MODEL_TYPES)
