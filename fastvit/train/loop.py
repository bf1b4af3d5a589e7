"""The training loop: build everything from a :class:`TrainConfig`, train, evaluate, save, resume.

Determinism: the model is initialized from ``seed`` on every rank; which images
a step sees (:class:`~fastvit.train.data.ShardedSampler`) and how they are
augmented are drawn from generators keyed by (seed, epoch) and (seed, step) for
the *global* batch, each rank taking its slice. So 1, 2 or N processes see the
same global batches, and a resumed run continues the uninterrupted one's
sequence; everything else random (dropout, stochastic depth, MPP corruption)
comes from RNGs saved in the resumable state.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from . import checkpointing, distributed, naflex, preflight, run_folder
from .data import Data, FolderDataset, ShardedSampler, load_data
from .interrupt import Interrupted, StopRequest
from .naflex import DEFAULT_MAX_TOKENS
from .metrics import MetricsLog, plot_curves
from .objectives import OBJECTIVES, build_objective, loss_from_stats
from .optim import build_optimizer, build_scheduler

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}
IMPLS = ("auto", "fused", "torch")
AUGMENTS = ("affine", "none")


@dataclass
class TrainConfig:
    model: str
    data: str = "digits"
    overrides: dict = field(default_factory=dict)  # ViTConfig fields
    pretrained: str | None = None
    epochs: int = 10
    steps: int | None = None  # overrides epochs
    batch_size: int = 64  # global
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup: int | None = None  # steps; None: 10% of the run
    layer_decay: float | None = None
    label_smoothing: float = 0.0
    augment: str = "affine"
    amp: str = "off"
    grad_checkpointing: bool = False
    compile: bool = False
    strategy: str = "single"
    objective: str = "supervised"
    impl: str = "auto"
    device: str = "auto"
    seed: int = 0
    out: str = "runs/train"
    eval_every: int | None = None  # steps; None: every epoch
    save_every: int | None = None  # steps; None: every epoch
    log_every: int = 1
    test_fraction: float = 0.2
    eval_batch_size: int = 256
    stop_at: int | None = None  # stop after this step with a resumable state (preemption, tests)
    progress: bool = True
    overwrite: bool = False  # replace a run already in ``out`` (else refused)
    naflex: bool = False  # images at their own size, packed per step (fastvit.train.naflex)
    max_tokens: int = DEFAULT_MAX_TOKENS  # --naflex: patches per step
    max_patches: int | None = None  # --naflex: patches per image (None: max_tokens)

    def validate(self):
        checks = [
            (self.amp in AMP_DTYPES, f"--amp must be one of {', '.join(AMP_DTYPES)}, got {self.amp!r}"),
            (self.objective in OBJECTIVES, f"--objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}"),
            (self.strategy in distributed.STRATEGIES, f"--strategy must be one of {', '.join(distributed.STRATEGIES)}"),
            (self.impl in IMPLS, f"--impl must be one of {', '.join(IMPLS)}, got {self.impl!r}"),
            (self.augment in AUGMENTS, f"--augment must be one of {', '.join(AUGMENTS)}, got {self.augment!r}"),
            (self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}"),
            (self.steps is None or self.steps >= 1, f"--steps must be >= 1, got {self.steps}"),
            (self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}"),
            (self.eval_batch_size >= 1, f"--eval-batch-size must be >= 1, got {self.eval_batch_size}"),
            (self.log_every >= 1, f"--log-every must be >= 1, got {self.log_every}"),
            (self.eval_every is None or self.eval_every >= 1, "--eval-every must be >= 1"),
            (self.save_every is None or self.save_every >= 1, "--save-every must be >= 1"),
            (self.stop_at is None or self.stop_at >= 1, "--stop-at must be >= 1"),
            (0.0 <= self.label_smoothing < 1.0, "--label-smoothing must be in [0, 1)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        naflex.check_naflex(self)


def _impl_overrides(impl: str, device: torch.device) -> dict:
    """``fused``: fastvit's Triton kernels everywhere; ``torch``: PyTorch ops (SDPA attention);
    ``auto``: fused on CUDA, torch elsewhere. Explicit ``--set *_impl=`` wins."""
    fused = impl == "fused" or (impl == "auto" and device.type == "cuda")
    if fused:
        return {"attn_impl": "triton", "norm_impl": "triton", "linear_impl": "triton"}
    return {"attn_impl": "sdpa"} if impl == "torch" else {}


# settings that do not travel with a run's run.json: where it is, how it is watched, when it stops
TRANSIENT = ("out", "stop_at", "progress", "overwrite")


def saved_settings(cfg: TrainConfig) -> dict:
    return {k: v for k, v in asdict(cfg).items() if k not in TRANSIENT}


def build_backbone(cfg: TrainConfig, num_classes: int, device: torch.device):
    import fastvit

    impl = naflex.impl_overrides if cfg.naflex else _impl_overrides
    overrides = {**impl(cfg.impl, device), **cfg.overrides}
    overrides["num_classes"] = 0 if cfg.objective == "mpp" else num_classes
    if cfg.naflex:
        return naflex.build_model(cfg, overrides)
    from pathlib import Path

    from fastvit.factory import names_weights

    if cfg.pretrained is not None and not Path(cfg.pretrained).exists() and names_weights(cfg.pretrained):
        # --pretrained name.tag / hf-hub:org/repo / local-dir:folder: timm's weights, the head for this task
        return fastvit.create_model(cfg.pretrained, pretrained=True, **overrides), overrides, []
    model = fastvit.create_model(cfg.model, **overrides)
    if cfg.pretrained is not None:
        import warnings

        source = Path(cfg.pretrained)
        if run_folder.is_run_folder(source):  # a run folder: its weights file
            source = source / "model.safetensors"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fastvit.load_checkpoint(model, str(source))
        notes = [str(w.message) for w in caught]
    else:
        notes = []
    return model, overrides, notes


def augment_batch(images: torch.Tensor, generator: torch.Generator, rank: int, world: int) -> torch.Tensor:
    """Random affine per image (rotation up to 10 degrees, scale 0.9-1.1, shift up to 15%, border fill).

    The parameters are drawn for the whole global batch from ``generator`` and this rank
    uses its slice, so the result does not depend on the number of processes."""
    n = images.shape[0]
    total = n * world
    angle = (torch.rand(total, generator=generator) * 2 - 1) * math.radians(10)
    scale = 1 + (torch.rand(total, generator=generator) * 2 - 1) * 0.1
    shift = (torch.rand(total, 2, generator=generator) * 2 - 1) * 0.15
    sl = slice(rank * n, (rank + 1) * n)
    angle, scale, shift = angle[sl], scale[sl], shift[sl]
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = torch.cos(angle) / scale
    theta[:, 0, 1] = -torch.sin(angle) / scale
    theta[:, 1, 0] = torch.sin(angle) / scale
    theta[:, 1, 1] = torch.cos(angle) / scale
    theta[:, :, 2] = shift
    theta = theta.to(images.device, images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def augment_each(images: list[torch.Tensor], generator: torch.Generator) -> list[torch.Tensor]:
    """:func:`augment_batch` for images of different sizes (``--naflex``), drawn per image in order."""
    return [augment_batch(im[None], generator, 0, 1)[0] for im in images]


def _step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63))


@torch.no_grad()
def evaluate(module, data: Data, cfg: TrainConfig, d: distributed.Dist, autocast) -> dict | None:
    """Test loss and accuracy over the whole test set, shared out among the ranks.

    Every rank runs the same number of batches (FSDP needs every rank in every forward);
    padding entries carry weight 0."""
    if data.test is None:
        return None
    n = len(data.test)
    per_rank = math.ceil(n / d.world_size)
    idx = torch.arange(d.rank * per_rank, (d.rank + 1) * per_rank)
    valid = idx < n
    idx = torch.where(valid, idx, torch.zeros_like(idx))
    module.eval()
    totals = torch.zeros(3, dtype=torch.float64)
    gen = torch.Generator().manual_seed(cfg.seed + 7919)
    for start in range(0, per_rank, cfg.eval_batch_size):
        sl = slice(start, start + cfg.eval_batch_size)
        images, labels = data.test.batch(idx[sl])
        with autocast():
            inputs = naflex.model_input(images, cfg, _patch_size(module) if cfg.naflex else None, d.device)
            stats = module(inputs, labels.to(d.device), generator=gen)
        totals += (stats.float().cpu() * valid[sl, None]).sum(0).double()
    module.train()
    totals = distributed.all_reduce_sum(totals.to(d.device if d.device.type == "cuda" else "cpu"), d).cpu()
    return {"test_loss": float(totals[0] / totals[2]), "test_acc": float(totals[1] / totals[2])}


def _progress(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True)


def train(cfg: TrainConfig, resume: bool = False, log=print) -> dict:
    """Run (or continue) training as ``cfg`` says; returns a summary dict (rank 0's view).

    Raises :class:`~fastvit.train.interrupt.Interrupted` (a ``KeyboardInterrupt``) when
    Ctrl-C stopped it, after saving a resumable state."""
    cfg.validate()
    world = distributed.launched_world_size()  # torchrun's WORLD_SIZE: refuse before joining the group
    if cfg.batch_size % world:
        raise ValueError(f"--batch-size {cfg.batch_size} (global) is not divisible by the number of processes ({world})")
    d = distributed.setup(cfg.strategy, cfg.device)
    try:
        return _train(cfg, d, resume, log)
    finally:
        distributed.teardown(d)


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse to start a new run where one already is, unless ``overwrite``."""
    status = run_folder.run_status(out)
    if status in (None, "incomplete") or overwrite:  # incomplete: stopped before its first save, nothing to lose
        return
    what = {"finished": "a finished run", "stopped": "a stopped run (resumable)",
            "weights": "a model.safetensors"}[status]
    hint = {"finished": f" --resume {out} --epochs N to train it longer,",
            "stopped": f" --resume {out} to continue it,"}.get(status, "")
    raise ValueError(f"--out {out} already holds {what}; pass --overwrite to replace it,{hint} "
                     f"or choose another --out")


def run_title(cfg: TrainConfig) -> str:
    """What curves.png says was trained: the preset, or the model the overrides made of it."""
    import fastvit

    arch = run_folder.model_args(cfg.overrides)
    if cfg.naflex:
        return f"{naflex.describe(cfg.model, cfg.overrides)} on {cfg.data} ({cfg.objective})"
    if not arch:
        return f"{cfg.model} on {cfg.data} ({cfg.objective})"
    m = fastvit.get_config(cfg.model, **cfg.overrides)
    return (f"ViT {m.depth} block(s), width {m.embed_dim}, {m.num_heads} head(s), patch {m.patch_size} at "
            f"{m.img_size[0]}x{m.img_size[1]} px (from {cfg.model}) on {cfg.data} ({cfg.objective})")


def _train(cfg: TrainConfig, d: distributed.Dist, resume: bool, log) -> dict:
    import fastvit

    out = Path(cfg.out)
    say = log if d.is_main else (lambda *a, **k: None)
    # unknown model / bad override: fail before reading data
    if cfg.naflex:
        model_cfg = naflex.naflex_config(cfg.model, cfg.overrides)
    else:
        model_cfg = fastvit.get_config(cfg.model, **cfg.overrides)
    if d.world_size > 1 and cfg.batch_size % d.world_size:
        raise ValueError(f"--batch-size {cfg.batch_size} (global) is not divisible by the number of processes ({d.world_size})")
    if not resume:
        check_out(out, cfg.overwrite)
    notes = preflight.check_dependencies(cfg)
    preflight.check_impl(cfg.impl, d.device)
    if d.device.type == "cpu":
        preflight.set_cpu_threads(say)
    if cfg.data == "digits" and preflight.digits_note(model_cfg.img_size):
        say(f"note: {preflight.digits_note(model_cfg.img_size)}")
    torch.manual_seed(cfg.seed)
    native = (model_cfg.patch_size, naflex.per_image_budget(cfg)) if cfg.naflex else None
    data = load_data(cfg.data, None if cfg.naflex else model_cfg.img_size, cfg.test_fraction, native)
    if isinstance(data.train, FolderDataset):
        preflight.verify_images(data.train.files + (data.test.files if data.test is not None else []))
    if cfg.naflex:
        tokens = [h * w for h, w in data.train.grids()]
        sampler = naflex.TokenBudgetSampler(tokens, cfg.max_tokens, cfg.seed)
    else:
        sampler = ShardedSampler(len(data.train), cfg.batch_size, cfg.seed, d.rank, d.world_size)
    total = cfg.steps or sum(sampler.steps_in(e) for e in range(cfg.epochs))
    if cfg.warmup is None:  # resolved once and saved, so extending the run keeps it
        cfg.warmup = max(1, total // 10)
    eval_every = cfg.eval_every or sampler.steps_per_epoch
    save_every = cfg.save_every or sampler.steps_per_epoch

    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model, overrides, load_notes = build_backbone(cfg, len(data.classes), d.device)
    objective = build_objective(cfg.objective, model, cfg.label_smoothing).to(d.device)
    if cfg.grad_checkpointing:
        model.set_grad_checkpointing(True)
    module = distributed.wrap(objective, cfg.strategy, d)
    optimizer = build_optimizer(objective, cfg.lr, cfg.weight_decay, cfg.layer_decay)
    scheduler = build_scheduler(optimizer, cfg.warmup, total)
    amp_dtype = AMP_DTYPES[cfg.amp]
    scaler = torch.amp.GradScaler(d.device.type, enabled=amp_dtype is torch.float16)
    forward = torch.compile(module) if cfg.compile else module

    def autocast():
        if amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(d.device.type, dtype=amp_dtype)

    step, epoch, pos = 0, 0, 0
    if resume:
        trainer = checkpointing.load_state(out, module, optimizer, d)
        scheduler.load_state_dict(trainer["scheduler"])
        scaler.load_state_dict(trainer["scaler"])
        step, epoch, pos = trainer["step"], trainer["epoch"], trainer["pos"]
        if step > total:
            raise ValueError(f"{out} is already at step {step}: a run of {total} steps would end before it "
                             f"(pass a larger --epochs or --steps)")
    else:
        torch.manual_seed(cfg.seed + 1 + d.rank)  # dropout / drop-path / MPP streams, per rank
    if d.is_main:
        if not resume:  # a replaced run (--overwrite) or one stopped before its first save
            run_folder.clear_run(out)
        out.mkdir(parents=True, exist_ok=True)
        run_folder.atomic_write_text(out / "run.json", json.dumps(saved_settings(cfg), indent=2) + "\n")
        run_folder.write_run_config(out, cfg.model, overrides, data.classes, cfg.objective,
                                    naflex=naflex.run_config_doc(cfg.model, overrides, data.classes, cfg) if cfg.naflex else None)
        per_step = f"up to {cfg.max_tokens} patches" if cfg.naflex else cfg.batch_size
        if cfg.naflex:
            log(f"naflex: {naflex.budget_note(tokens, cfg.max_tokens)}")
        log(f"{data.description}; model {cfg.model} {cfg.overrides or ''}; {total} steps of {per_step} "
            f"({sampler.steps_per_epoch}/epoch) on {d.world_size} x {d.device.type} ({cfg.strategy})"
            + (f"; resuming at step {step}" if resume else ""))
        for note in notes:
            log(f"note: {note}")
        for note in load_notes:
            log(f"pretrained: {note}")
    distributed.barrier(d)
    if resume and step >= total:
        if (out / "model.safetensors").is_file():
            say(f"{out}: the run already finished its {total} steps; nothing to resume "
                f"(train it longer with --resume {out} --epochs N or --steps N)")
            return {"step": step, "total_steps": total, "out": str(out), "finished": True}
        say(f"{out}: the run finished its {total} steps but its weights were not written: writing them now")
        from .metrics import read_metrics

        evals = [r for r in read_metrics(out / "metrics.jsonl") if "test_acc" in r and r["step"] == step]
        last_eval = {k: evals[-1][k] for k in ("test_loss", "test_acc")} if evals else None
        _finish(cfg, out, module, model, overrides, data, last_eval, step, say, d)
        return {"step": step, "total_steps": total, "out": str(out), "finished": True}
    metrics = MetricsLog(out / "metrics.jsonl", d.is_main, step if resume else None)

    def trainer_state():
        return {"step": step, "epoch": epoch, "pos": pos, "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(), "world_size": d.world_size}

    bar = _progress(total, step, cfg.progress and d.is_main)
    last_eval, last_loss, t0 = None, None, time.time()
    saved_at = step if resume else None
    module.train()
    stop = StopRequest(say)
    try:
        with stop:
            while step < total:
                if pos >= sampler.steps_in(epoch):
                    epoch, pos = epoch + 1, 0
                images, labels = data.train.batch(sampler.indices(epoch, pos))
                labels = labels.to(d.device)
                if cfg.naflex:
                    if cfg.augment == "affine":
                        images = augment_each(images, _step_generator(cfg.seed, step))
                    images = naflex.model_input(images, cfg, model_cfg.patch_size, d.device)
                else:
                    images = images.to(d.device)
                    if cfg.augment == "affine" and cfg.objective == "supervised":
                        images = augment_batch(images, _step_generator(cfg.seed, step), d.rank, d.world_size)
                lr = optimizer.param_groups[0]["lr"] / optimizer.param_groups[0]["lr_scale"]
                with autocast():
                    stats = forward(images, labels)
                loss = loss_from_stats(stats)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"loss is {loss.item()} at step {step + 1}; lower --lr or use --amp bf16/off")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                step, pos = step + 1, pos + 1
                # the Ctrl-C flag rides along, so every rank stops after the same step
                sums = distributed.all_reduce_sum(torch.stack([
                    stats[:, 0].sum().detach().float(), stats[:, 2].sum().detach().float(),
                    torch.tensor(float(stop.requested), device=stats.device)]), d)
                last_loss = float(sums[0] / sums[1])
                interrupted = bool(sums[2] > 0) and step < total
                if step % cfg.log_every == 0 or step == total:
                    metrics.write({"step": step, "epoch": epoch + 1, "loss": last_loss, "lr": lr})
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{last_loss:.4f}", epoch=epoch)
                if (step % eval_every == 0 or step == total) and not interrupted:
                    last_eval = evaluate(module, data, cfg, d, autocast)
                    if last_eval is not None:
                        metrics.write({"step": step, "epoch": epoch + 1, **last_eval})
                        if bar is not None:
                            bar.set_postfix(loss=f"{last_loss:.4f}", acc=f"{last_eval['test_acc']:.4f}", epoch=epoch)
                stopping = cfg.stop_at is not None and step >= cfg.stop_at and step < total
                if step % save_every == 0 or step == total or stopping or interrupted:
                    checkpointing.save_state(out, module, optimizer, trainer_state(), d)
                    saved_at = step
                if interrupted:
                    raise Interrupted(f"interrupted: stopped after step {step} of {total}, state saved; "
                                      f"continue with: fastvit train --resume {out}", step)
                if stopping:
                    break
    finally:
        if bar is not None:
            bar.close()
    summary = {"step": step, "total_steps": total, "loss": last_loss, "seconds": time.time() - t0,
               "out": str(out), **(last_eval or {})}
    if step < total:
        say(f"stopped after step {step} of {total}; continue with: fastvit train --resume {out}")
        return {**summary, "finished": False}
    _finish(cfg, out, module, model, overrides, data, last_eval, step, say, d, summary["seconds"], last_loss)
    return {**summary, "finished": True}


def _patch_size(module) -> int:
    """The patch size of the backbone an objective (possibly wrapped by DDP / FSDP) holds."""
    inner = getattr(module, "module", module)
    return inner.model.cfg.patch_size


def _finish(cfg, out, module, model, overrides, data, last_eval, step, say, d, seconds=None, last_loss=None):
    """Write the final weights (collective: every rank gathers) and the curves."""
    weights = checkpointing.full_model_state(module, model)
    if d.is_main:
        meta = {"model": cfg.model, "overrides": overrides, "classes": data.classes, "objective": cfg.objective,
                **({k: last_eval[k] for k in ("test_acc", "test_loss")} if last_eval else {})}
        checkpointing.save_weights(out / "model.safetensors", weights, meta)
        what = "test accuracy" if cfg.objective == "supervised" else "test colour accuracy on corrupted patches"
        png = plot_curves(out / "metrics.jsonl", out / "curves.png", run_title(cfg), acc_label=what)
        acc = f", {what} {last_eval['test_acc']:.4f}" if last_eval else ""
        took = f" in {seconds:.1f} s" if seconds is not None else ""
        loss = f", loss {last_loss:.4f}" if last_loss is not None else ""
        say(f"done: {step} steps{took}{loss}{acc}; weights {out / 'model.safetensors'}"
            + (f", curves {png}" if png else "") + f"; reload with fastvit.train.load_run({str(out)!r})")
    distributed.barrier(d)
