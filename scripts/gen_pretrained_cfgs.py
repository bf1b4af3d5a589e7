"""Regenerate fastvit/checkpoints/timm_pretrained_cfgs.json from the installed timm (the interop venv).

The table holds, for every architecture of timm's vision_transformer, vision_transformer_hybrid, deit
and eva (and naflexvit) modules, its pretrained tags in timm's order (the first is the default) and each tag's
``pretrained_cfg`` as the fields that differ from ``timm.models.PretrainedCfg``'s defaults.
Usage: python scripts/gen_pretrained_cfgs.py [output.json]
"""

import dataclasses
import json
import sys
from pathlib import Path

import timm
from timm.models import PretrainedCfg
from timm.models import _registry as registry

MODULES = ("vision_transformer", "vision_transformer_hybrid", "deit", "eva", "naflexvit")


def table() -> dict:
    defaults = PretrainedCfg().to_dict()
    fields = [f.name for f in dataclasses.fields(PretrainedCfg)]
    archs = {}
    for arch in sorted(timm.list_models(module=list(MODULES))):
        tags = {}
        for tag in registry._model_default_cfgs[arch].tags:
            cfg = registry.get_pretrained_cfg(f"{arch}.{tag}").to_dict()
            tags[tag] = {k: v for k, v in cfg.items() if k not in defaults or v != defaults[k]}
            tags[tag]["pretrained"] = f"{arch}.{tag}" in registry._model_has_pretrained
        archs[arch] = tags
    return {"timm_version": timm.__version__, "fields": fields,
            "defaults": {k: defaults.get(k) for k in fields}, "archs": archs}


def dump(data: dict) -> str:
    """One line per tag, so that a diff shows which tags changed."""
    lines = ["{", f'"timm_version": {json.dumps(data["timm_version"])},', f'"fields": {json.dumps(data["fields"])},',
             f'"defaults": {json.dumps(data["defaults"])},', '"archs": {']
    arch_lines = []
    for arch, tags in data["archs"].items():
        body = ",\n".join(f"  {json.dumps(tag)}: {json.dumps(cfg)}" for tag, cfg in tags.items())
        arch_lines.append(f"{json.dumps(arch)}: {{\n{body}\n}}")
    lines.append(",\n".join(arch_lines))
    lines += ["}", "}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parents[1] / "fastvit/checkpoints/timm_pretrained_cfgs.json")
    out.write_text(dump(table()))
    print(f"wrote {out}")
