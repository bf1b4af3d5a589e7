"""``fastvit train``: argparse front end of :func:`fastvit.train.loop.train`.

Bad input (unknown model or config field, missing or empty data folder, an
empty class, a global batch the processes cannot share, a run folder with
nothing to resume) is reported as one ``fastvit train: error: ...`` line on
stderr with exit status 2, on every rank, and no traceback.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from dataclasses import fields
from pathlib import Path

EXIT_BAD_INPUT = 2

_SIZE_FLAGS = ("img_size", "patch_size", "depth", "embed_dim", "num_heads")


def parse_set(text: str) -> tuple[str, object]:
    """``key=value`` with value a Python literal (``0.1``, ``True``, ``(224, 320)``) or a bare string."""
    key, sep, value = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    lowered = value.strip().lower()
    if lowered in ("true", "false", "none"):
        return key, {"true": True, "false": False, "none": None}[lowered]
    try:
        return key, ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
        return key, value.strip()


def _optional_float(text: str) -> float | None:
    return None if text.lower() in ("none", "off") else float(text)


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "train",
        help="train or fine-tune a model (digits or an image folder; single process, DDP or FSDP2 under torchrun)",
        description=(
            "Train or fine-tune a fastvit model, in one process or many (torchrun --nproc-per-node N -m fastvit train ...). "
            "Writes DIR/metrics.jsonl, DIR/curves.png, DIR/model.safetensors (+ config.json) and a resumable DIR/state/."
        ),
    )
    p.add_argument("--model", help="preset name (fastvit.list_models()); required unless --resume")
    size = p.add_argument_group("model size overrides (any ViTConfig field with --set key=value)")
    size.add_argument("--img-size", type=int)
    size.add_argument("--patch-size", type=int)
    size.add_argument("--depth", type=int)
    size.add_argument("--embed-dim", type=int)
    size.add_argument("--num-heads", type=int)
    size.add_argument("--set", dest="sets", action="append", type=parse_set, default=[], metavar="KEY=VALUE",
                      help="any ViTConfig field, e.g. --set drop_path_rate=0.1 (repeatable)")
    p.add_argument("--pretrained", help="checkpoint to start from (any layout fastvit.load_checkpoint reads, or "
                                        "timm's name.tag / hf-hub:org/repo / local-dir:folder); "
                                        "a head for another class count is replaced")
    p.add_argument("--data", default="digits", help="'digits' (scikit-learn, no download) or a folder with one "
                                                    "subfolder of images per class (default: digits)")
    p.add_argument("--test-fraction", type=float, default=0.2,
                   help="per-class fraction of a folder held out for testing, unless it has train/ and val/ (default 0.2)")
    p.add_argument("--epochs", type=int, default=10, help="passes over the training set (default 10)")
    p.add_argument("--steps", type=int, help="optimizer steps in total (overrides --epochs)")
    p.add_argument("--batch-size", type=int, default=64, help="global batch, split evenly over the processes (default 64)")
    p.add_argument("--eval-batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate (default 1e-3)")
    p.add_argument("--weight-decay", type=float, default=0.05,
                   help="AdamW decoupled weight decay; none on no_weight_decay() params, biases and norms (default 0.05)")
    p.add_argument("--warmup", type=int, help="linear warmup steps before the cosine decay (default: 10%% of the run)")
    p.add_argument("--layer-decay", type=_optional_float, help="layer-wise lr decay d: block i gets lr * d**(depth+1-layer)")
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--augment", default="affine", choices=("affine", "none"),
                   help="random rotation/scale/shift per training image (default affine)")
    p.add_argument("--amp", default="off", choices=("bf16", "fp16", "off"), help="autocast dtype (default off)")
    p.add_argument("--grad-checkpointing", action="store_true", help="recompute block activations in the backward")
    p.add_argument("--compile", action="store_true", help="torch.compile the training module")
    p.add_argument("--impl", default="auto", choices=("auto", "fused", "torch"),
                   help="fused: Triton attention, LayerNorm and GEMM epilogues; auto: fused on CUDA (default)")
    p.add_argument("--strategy", default="single", choices=("single", "ddp", "fsdp"),
                   help="single process, DistributedDataParallel, or FSDP2 (fully_shard); launch ddp/fsdp with torchrun")
    p.add_argument("--objective", default="supervised", choices=("supervised", "mpp"),
                   help="mpp: masked patch prediction (predict corrupted patches' 3-bit mean colour)")
    p.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/train", help="output folder (default runs/train)")
    p.add_argument("--resume", metavar="DIR", help="continue the run saved in DIR with its own settings")
    p.add_argument("--eval-every", type=int, help="steps between evaluations (default: every epoch)")
    p.add_argument("--save-every", type=int, help="steps between resumable states (default: every epoch)")
    p.add_argument("--log-every", type=int, default=1, help="steps between metrics.jsonl lines (default 1)")
    p.add_argument("--stop-at", type=int, help="stop after this step, leaving a resumable state")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run, _parser=p)
    return p


def config_from_args(args: argparse.Namespace):
    from .loop import TrainConfig

    if args.resume:
        run_file = Path(args.resume) / "run.json"
        from .checkpointing import has_state

        if not run_file.is_file() or not has_state(args.resume):
            raise ValueError(f"--resume {args.resume}: no resumable run there (expected run.json and state/trainer.pt)")
        saved = json.loads(run_file.read_text())
        known = {f.name for f in fields(TrainConfig)}
        cfg = TrainConfig(**{k: v for k, v in saved.items() if k in known})
        cfg.out = str(args.resume)
        cfg.stop_at = args.stop_at
        cfg.progress = not args.no_progress
        return cfg, True
    if not args.model:
        raise ValueError("--model is required (fastvit.list_models() lists the presets)")
    overrides = {k: getattr(args, k) for k in _SIZE_FLAGS if getattr(args, k) is not None}
    overrides.update(dict(args.sets))
    names = ("data", "pretrained", "epochs", "steps", "batch_size", "lr", "weight_decay", "warmup", "layer_decay",
             "label_smoothing", "augment", "amp", "grad_checkpointing", "compile", "strategy", "objective", "impl",
             "device", "seed", "out", "eval_every", "save_every", "log_every", "test_fraction", "eval_batch_size",
             "stop_at")
    cfg = TrainConfig(model=args.model, overrides=overrides, progress=not args.no_progress,
                      **{n: getattr(args, n) for n in names})
    if cfg.pretrained is not None and not Path(cfg.pretrained).exists():
        from fastvit.factory import names_weights

        if not names_weights(cfg.pretrained):
            raise ValueError(f"--pretrained {cfg.pretrained}: no such file or folder (nor a name.tag, hf-hub: or local-dir: model)")
    return cfg, False


def run(args: argparse.Namespace) -> int:
    try:
        cfg, resume = config_from_args(args)
        from .loop import train

        train(cfg, resume=resume)
    except (ValueError, TypeError, KeyError, FileNotFoundError, ImportError, FloatingPointError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"fastvit train: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0
