"""``fastvit analyze``: the ViT paper's figures for a model and some photographs.

Writes into ``--out``: ``mean_attention_distance.png``, ``pos_embed_similarity.png``,
``patch_embed_pca.png`` (plain ViTs; a hybrid's embedding has no pixel filters),
``rollout_<image>.png`` per image, and ``analysis.json`` with the numbers.
Without ``--image`` / ``--sample`` the scikit-learn sample photograph
``china.jpg`` is used (shipped with scikit-learn; nothing is downloaded).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

# name -> (package, loader) of the photographs shipped inside scikit-learn / scikit-image
SAMPLES = {
    "china": ("sklearn", "china.jpg"),
    "flower": ("sklearn", "flower.jpg"),
    "astronaut": ("skimage", "astronaut"),
    "chelsea": ("skimage", "chelsea"),
    "coffee": ("skimage", "coffee"),
    "rocket": ("skimage", "rocket"),
}
NORMS = {"inception": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)), "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))}
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


RANDOM_NOTE = "RANDOM WEIGHTS (no --checkpoint): not a trained model"
RANDOM_WHY = "the figures show an untrained network, not what a ViT learns (pass --checkpoint PATH)"


class AnalyzeError(Exception):
    """A user-facing problem (bad argument, unreadable file): printed without a traceback."""


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "analyze",
        help="the ViT paper's analyses as figures: attention distance, position-embedding similarity, rollout, filters",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--model", help="preset name (fastvit.list_models()); not needed with --checkpoint RUN_DIR")
    p.add_argument("--checkpoint", metavar="PATH", help="local checkpoint (timm, torchvision, HF or big_vision layout), "
                                                        "or a fastvit train run folder (its config.json rebuilds the model)")
    p.add_argument("--image", nargs="+", default=[], metavar="PATH", help="photographs to analyse")
    p.add_argument("--sample", nargs="+", default=[], choices=sorted(SAMPLES), help="built-in sample photographs")
    p.add_argument("--out", required=True, metavar="DIR", help="directory for the PNGs and analysis.json")
    p.add_argument("--attn-impl", default="auto", help="attention backend (default auto: Triton on CUDA, else SDPA)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--dtype", default=None, choices=sorted(DTYPES), help="model dtype (default: bf16 on CUDA, fp32 on CPU)")
    p.add_argument("--img-size", type=int, default=None, help="input resolution (default: the preset's)")
    p.add_argument("--norm", default="inception", choices=sorted(NORMS), help="input normalisation (ViT/augreg: inception)")
    p.add_argument("--num-components", type=int, default=28, help="principal components of the patch filters to draw")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def load_sample(name: str):
    """(H, W, 3) uint8 array of a built-in sample photograph."""
    package, key = SAMPLES[name]
    if package == "sklearn":
        try:
            from sklearn.datasets import load_sample_image
        except ImportError as e:
            raise AnalyzeError(f"sample {name!r} ships with scikit-learn: pip install scikit-learn") from e
        return load_sample_image(key)
    try:
        import skimage.data
    except ImportError as e:
        raise AnalyzeError(f"sample {name!r} ships with scikit-image: pip install scikit-image") from e
    return getattr(skimage.data, key)()


def load_image(path: str):
    """(H, W, 3) uint8 array from an image file."""
    import numpy as np

    p = Path(path)
    if not p.is_file():
        raise AnalyzeError(f"image not found: {path}")
    try:
        from PIL import Image

        with Image.open(p) as im:
            return np.asarray(im.convert("RGB"))
    except ImportError as e:
        raise AnalyzeError("reading image files needs Pillow: pip install pillow") from e
    except Exception as e:  # noqa: BLE001 - any decoder failure is a bad input file
        raise AnalyzeError(f"cannot read image {path}: {e}") from e


def preprocess(array, size: tuple[int, int], norm: str):
    """uint8 (H, W, 3) -> (display image (h, w, 3) in [0, 1], normalised (1, 3, h, w) tensor):
    resized so it covers ``size``, centre-cropped."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.array(array, dtype=np.float32)).div(255)
    if x.ndim == 2:
        x = x[..., None].expand(-1, -1, 3)
    x = x[..., :3].permute(2, 0, 1)[None]
    h, w = x.shape[-2:]
    s = max(size[0] / h, size[1] / w)
    nh, nw = max(size[0], round(h * s)), max(size[1], round(w * s))
    x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    top, left = (nh - size[0]) // 2, (nw - size[1]) // 2
    x = x[..., top : top + size[0], left : left + size[1]]
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in NORMS[norm])
    return x[0].permute(1, 2, 0).numpy(), (x - mean) / std


def _stem(name: str, used: set[str]) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(name).stem) or "image"
    base, i = stem, 1
    while stem in used:
        i += 1
        stem = f"{base}_{i}"
    used.add(stem)
    return stem


def _inputs(args) -> list[tuple[str, object]]:
    images = [(path, load_image(path)) for path in args.image]
    images += [(f"{name}", load_sample(name)) for name in args.sample]
    return images or [("china", load_sample("china"))]


def _build_model(args):
    import torch

    import fastvit

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise AnalyzeError("--device cuda: no CUDA GPU is available")
    if device != "cpu" and not device.startswith("cuda"):
        raise AnalyzeError(f"--device must be cpu or cuda, got {device!r}")
    from fastvit.kernels.tuning import interpreting

    if args.attn_impl == "triton" and device == "cpu" and not interpreting():
        raise AnalyzeError("--attn-impl triton needs a CUDA GPU (or TRITON_INTERPRET=1); use --attn-impl auto or sdpa")
    dtype = getattr(torch, DTYPES[args.dtype or ("bf16" if device.startswith("cuda") else "fp32")])
    overrides = dict(attn_impl=args.attn_impl)
    if args.img_size is not None:
        overrides["img_size"] = args.img_size
    if args.checkpoint is not None and not Path(args.checkpoint).exists():
        raise AnalyzeError(f"checkpoint not found: {args.checkpoint}")
    try:
        model = _load(fastvit, args.model, args.checkpoint, overrides)
    except (ValueError, TypeError, KeyError, OSError, ImportError) as e:
        raise AnalyzeError(str(e)) from e
    return model.to(device=device, dtype=dtype).eval(), device, dtype


def _load(fastvit, name, checkpoint, overrides):
    """The model to analyse: a run folder (or a timm local-dir folder) rebuilds itself from its
    config.json; anything else is preset ``name`` with the checkpoint's weights."""
    from fastvit.train.run_folder import load_run, read_run_config

    found = read_run_config(checkpoint) if checkpoint is not None else None
    if found is not None:
        if name is not None and name != found[0]:
            raise AnalyzeError(f"--checkpoint {checkpoint} holds a {found[0]}, not --model {name}; drop --model")
        return load_run(checkpoint, **overrides)
    if name is None:
        raise AnalyzeError("--model is required (fastvit.list_models() lists the presets), "
                           "unless --checkpoint is a run folder")
    from fastvit.factory import names_weights

    pretrained = checkpoint if checkpoint is not None else names_weights(name)  # name.tag: its weights
    return fastvit.create_model(name, pretrained=pretrained, **overrides)


def analyze(args) -> dict:
    """Compute every analysis, draw the figures, write analysis.json; returns the JSON document."""
    import torch
    from tqdm import tqdm

    from . import figures
    from .maps import uses_lse_route
    from .metrics import attention_rollout, mean_attention_distance, patch_embed_components, pos_embed_similarity

    if args.num_components < 1:
        raise AnalyzeError(f"--num-components must be >= 1, got {args.num_components}")
    if args.img_size is not None and args.img_size < 1:
        raise AnalyzeError(f"--img-size must be positive, got {args.img_size}")
    images = _inputs(args)
    model, device, dtype = _build_model(args)
    note = None if args.checkpoint else RANDOM_NOTE
    if note:  # the figures of an untrained model look like findings; say so where they are read
        print(f"fastvit analyze: warning: no --checkpoint: the model has random weights; {RANDOM_WHY}", file=sys.stderr)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise AnalyzeError(f"cannot create --out {out}: {e}") from e
    size = model.cfg.img_size
    bar = tqdm(total=len(images) + 2, desc="analyze", unit="step", file=sys.stderr, disable=args.no_progress, dynamic_ncols=True)
    used: set[str] = set()
    distances, rollouts, written = [], {}, []
    probe = torch.zeros(1, 1, 3, model.cfg.num_heads, model.cfg.head_dim, device=device, dtype=dtype)
    route = "lse (Triton kernel)" if uses_lse_route(model.blocks[0].attn, probe) else "softmax"
    for name, array in images:
        bar.set_postfix_str(Path(name).name)
        shown, x = preprocess(array, size, args.norm)
        x = x.to(device=device, dtype=dtype)
        distances.append(mean_attention_distance(model, x))
        roll = attention_rollout(model, x)[0]
        stem = _stem(name, used)
        rollouts[stem] = {"source": name, "rollout": roll.tolist()}
        written.append(figures.plot_rollout(shown, roll.numpy(), out / f"rollout_{stem}.png", title=stem, note=note))
        bar.update()
    distance = torch.stack(distances).mean(0)
    written.append(figures.plot_mean_distance(distance.numpy(), out / "mean_attention_distance.png", note=note))
    sim = pos_embed_similarity(model)
    written.append(figures.plot_pos_similarity(sim.numpy(), out / "pos_embed_similarity.png", note=note))
    bar.update()
    pca = None
    if getattr(model.patch_embed, "backbone", None) is None:
        comps, ratio = patch_embed_components(model, args.num_components)
        written.append(figures.plot_filter_components(comps.numpy(), ratio.numpy(), out / "patch_embed_pca.png", note=note))
        pca = {"explained_variance_ratio": ratio.tolist(), "num_components": comps.shape[0]}
    bar.update()
    bar.close()
    doc = {
        "model": args.model or model.pretrained_cfg.get("architecture"),
        "checkpoint": args.checkpoint,
        "warning": note,
        "attn_impl": args.attn_impl,
        "maps_route": route,
        "device": str(device),
        "dtype": str(dtype).replace("torch.", ""),
        "img_size": list(size),
        "grid": list(model.cfg.grid_size),
        "num_prefix_tokens": model.num_prefix_tokens,
        "mean_attention_distance": distance.tolist(),
        "mean_attention_distance_units": "pixels",
        "rollout": rollouts,
        "pos_embed_similarity": [[[[round(v, 6) for v in row] for row in a] for a in b] for b in sim.tolist()],
        "patch_embed_pca": pca,
        "figures": [p.name for p in written],
    }
    (out / "analysis.json").write_text(json.dumps(_finite(doc), indent=1, allow_nan=False))
    return doc


def _finite(obj):
    """NaN / inf (not valid JSON) -> None, recursively."""
    import math

    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def run(args: argparse.Namespace) -> int:
    """0 on success; 2 with a one-line message (no traceback) for bad arguments or unreadable files."""
    try:
        doc = analyze(args)
    except (AnalyzeError, ImportError) as e:
        print(f"fastvit analyze: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {len(doc['figures'])} figures and analysis.json to {args.out}")
    return 0
