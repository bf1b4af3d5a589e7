"""``fastvit train``: argparse front end of :func:`fastvit.train.loop.train`.

Bad input (unknown model or config field, missing or empty data folder, an
empty class, a global batch the processes cannot share, a run folder with
nothing to resume, a folder already holding a run, a missing package) is
reported as one ``fastvit train: error: ...`` line on stderr with exit status 2,
on every rank, and no traceback. Ctrl-C prints how to resume and exits 130.
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
    p.add_argument("--model", help="preset name (fastvit.list_models()); required unless --resume or "
                                   "--pretrained RUN_DIR")
    size = p.add_argument_group("model size overrides (any ViTConfig field with --set key=value)")
    size.add_argument("--img-size", type=int)
    size.add_argument("--patch-size", type=int)
    size.add_argument("--depth", type=int)
    size.add_argument("--embed-dim", type=int)
    size.add_argument("--num-heads", type=int)
    size.add_argument("--set", dest="sets", action="append", type=parse_set, default=[], metavar="KEY=VALUE",
                      help="any ViTConfig field, e.g. --set drop_path_rate=0.1 (repeatable)")
    p.add_argument("--pretrained", help="checkpoint to start from (any layout fastvit.load_checkpoint reads; a "
                                        "run folder: its model and sizes are rebuilt; or timm's name.tag / "
                                        "hf-hub:org/repo / local-dir:folder); a head for another class count is replaced")
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
    p.add_argument("--naflex", action="store_true",
                   help="images at their own size and aspect ratio, packed per step up to --max-tokens patches "
                        "(a naflexvit_* --model and an image folder)")
    p.add_argument("--max-tokens", type=int, default=4096,  # fastvit.train.naflex.DEFAULT_MAX_TOKENS
                   help="--naflex: patches per step, the images of a step packed with no padding (default 4096)")
    p.add_argument("--max-patches", type=int,
                   help="--naflex: patches per image; a larger image is scaled down, aspect ratio kept "
                        "(default: --max-tokens)")
    p.add_argument("--objective", default="supervised", choices=("supervised", "mpp"),
                   help="mpp: masked patch prediction (predict corrupted patches' 3-bit mean colour)")
    p.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/train", help="output folder (default runs/train)")
    p.add_argument("--resume", metavar="DIR", help="continue the run saved in DIR with its own settings; "
                                                   "--epochs/--steps extend it (also a finished one)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run already in --out (without it, a folder holding a run is refused)")
    p.add_argument("--eval-every", type=int, help="steps between evaluations (default: every epoch)")
    p.add_argument("--save-every", type=int, help="steps between resumable states (default: every epoch)")
    p.add_argument("--log-every", type=int, default=1, help="steps between metrics.jsonl lines (default 1)")
    p.add_argument("--stop-at", type=int, help="stop after this step, leaving a resumable state")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run, _parser=p)
    return p


# flags --resume applies to a saved run (the rest must match it): how long it runs, how it is watched
RESUME_APPLIES = ("epochs", "steps", "eval_every", "save_every", "log_every", "eval_batch_size", "stop_at", "progress")
_NAMES = ("data", "pretrained", "epochs", "steps", "batch_size", "lr", "weight_decay", "warmup", "layer_decay",
          "label_smoothing", "augment", "amp", "grad_checkpointing", "compile", "strategy", "objective", "impl",
          "device", "seed", "out", "eval_every", "save_every", "log_every", "test_fraction", "eval_batch_size",
          "stop_at", "overwrite", "naflex", "max_tokens", "max_patches")


def _flag(name: str) -> str:
    return "--no-progress" if name == "progress" else "--" + name.replace("_", "-")


def given_flags(args: argparse.Namespace) -> dict:
    """The TrainConfig values the command line sets away from the parser's defaults."""
    parser = getattr(args, "_parser", None)
    defaults = {a.dest: a.default for a in parser._actions} if parser is not None else {}
    given = {n: getattr(args, n) for n in _NAMES if hasattr(args, n) and getattr(args, n) != defaults.get(n)}
    if getattr(args, "no_progress", False):
        given["progress"] = False
    if args.model is not None:
        given["model"] = args.model
    overrides = _overrides(args)
    if overrides:
        given["overrides"] = overrides
    return given


def _overrides(args) -> dict:
    overrides = {k: getattr(args, k) for k in _SIZE_FLAGS if getattr(args, k, None) is not None}
    overrides.update(dict(getattr(args, "sets", []) or []))
    return overrides


def _say(text: str):
    import os

    if os.environ.get("RANK", "0") == "0":
        print(text)


def _resume_config(args):
    from .checkpointing import has_state
    from .loop import TRANSIENT, TrainConfig

    run_file = Path(args.resume) / "run.json"
    if not run_file.is_file() or not has_state(args.resume):
        raise ValueError(f"--resume {args.resume}: no resumable run there (expected run.json and state/trainer.pt)")
    saved = json.loads(run_file.read_text())
    known = {f.name for f in fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in saved.items() if k in known and k not in TRANSIENT})
    cfg.out = str(args.resume)
    given = given_flags(args)
    given.pop("out", None)
    if given.pop("overwrite", False):
        raise ValueError("--overwrite starts a new run; --resume continues one: pass one of them")
    refused, applied = [], []
    for name, value in given.items():
        have = getattr(cfg, name)
        if name == "overrides":
            differ = {k: v for k, v in value.items() if cfg.overrides.get(k) != v}
            refused += [f"{_flag(k)}={v!r} (saved: {cfg.overrides.get(k)!r})" for k, v in differ.items()]
        elif name in RESUME_APPLIES:
            if value != have and name not in ("progress", "stop_at"):
                applied.append(f"{_flag(name)} {have} -> {value}")
            setattr(cfg, name, value)
        elif _differs(value, have):
            refused.append(f"{_flag(name)} {value!r} (saved: {have!r})")
    if refused:
        raise ValueError(f"--resume {args.resume} continues the run with its saved settings; these flags differ: "
                         f"{'; '.join(refused)}. Only --epochs/--steps (to extend it) and the logging/saving "
                         f"intervals can change on resume; start a new run (with --pretrained {args.resume}) instead")
    if "epochs" in given and "steps" not in given and cfg.steps is not None:
        applied.append(f"--steps {cfg.steps} -> none (--epochs {cfg.epochs} decides)")
        cfg.steps = None
    if applied:
        _say("resuming with changed settings: " + "; ".join(applied))
    return cfg


def _differs(value, have) -> bool:
    if isinstance(value, (int, float)) and isinstance(have, (int, float)) and not isinstance(value, bool):
        return float(value) != float(have)
    if isinstance(value, str) and isinstance(have, str):
        return value != have and str(Path(value)) != str(Path(have))
    return value != have


def config_from_args(args: argparse.Namespace):
    from .loop import TrainConfig
    from .run_folder import is_run_folder, model_args, read_run_config

    if args.resume:
        return _resume_config(args), True
    overrides = _overrides(args)
    model = args.model
    if args.pretrained is not None and not Path(args.pretrained).exists():
        from fastvit.checkpoints.pretrained_cfgs import split_tag
        from fastvit.factory import names_weights

        if not names_weights(args.pretrained):
            raise ValueError(f"--pretrained {args.pretrained}: no such file or folder "
                             "(nor a name.tag, hf-hub:org/repo or local-dir:folder model)")
        model = model or split_tag(args.pretrained)[0]  # name.tag builds that architecture
    if args.pretrained is not None and is_run_folder(args.pretrained):  # a run folder is a model: rebuild it
        arch, saved_args, _ = read_run_config(args.pretrained)
        if model is not None and model != arch:
            raise ValueError(f"--pretrained {args.pretrained} holds a {arch}; drop --model or pass --model {arch}")
        if not (Path(args.pretrained) / "model.safetensors").is_file():
            raise ValueError(f"--pretrained {args.pretrained}: the run has no model.safetensors yet "
                             f"(finish it with fastvit train --resume {args.pretrained})")
        model = arch
        overrides = {**model_args(saved_args), **overrides}
    if not model:
        raise ValueError("--model is required (fastvit.list_models() lists the presets)")
    if args.naflex and "batch_size" in given_flags(args):
        raise ValueError("--naflex fills each step with whole images up to --max-tokens patches; --batch-size does not apply")
    cfg = TrainConfig(model=model, overrides=overrides, progress=not args.no_progress,
                      **{n: getattr(args, n) for n in _NAMES})
    return cfg, False


def run(args: argparse.Namespace) -> int:
    from .interrupt import EXIT_INTERRUPTED

    cfg = None
    try:
        cfg, resume = config_from_args(args)
        from .loop import train

        train(cfg, resume=resume)
    except KeyboardInterrupt as e:
        print(f"fastvit train: {_interrupted_message(e, cfg)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, TypeError, KeyError, FileNotFoundError, ImportError, FloatingPointError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"fastvit train: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


def _interrupted_message(e: KeyboardInterrupt, cfg) -> str:
    from .interrupt import Interrupted

    if isinstance(e, Interrupted):
        return str(e)
    if cfg is None:
        return "interrupted before the run started"
    from .checkpointing import saved_step

    try:
        step = saved_step(cfg.out)
    except Exception:  # noqa: BLE001 - a half-written state: say nothing was saved
        step = None
    if step is None:
        return "interrupted before any state was saved: nothing to resume"
    return f"interrupted; the last saved state is at step {step}: continue with: fastvit train --resume {cfg.out}"
