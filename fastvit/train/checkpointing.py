"""Resumable training state and the final weights.

``DIR/state/`` holds everything a run needs to continue exactly where it stopped:
model and optimizer through ``torch.distributed.checkpoint`` (each rank writes its
own shards under FSDP; one process writes the whole under ``single``/``ddp``), and
``trainer.pt`` (scheduler, step, epoch, position in the epoch, grad scaler) plus
``rng-rank<R>.pt`` (every RNG each rank draws from). A new state is written to
``state.tmp/``; the old one is renamed to ``state.old/``, the new one to ``state/``,
and only then is the old one removed. An interruption at any point leaves a
complete state (``state/``, else ``state.old/``), which :func:`state_dir` finds.

``DIR/model.safetensors`` is the backbone's full state dict in fastvit (= timm)
names, loadable with ``fastvit.create_model(name, pretrained=...)`` given the
overrides recorded in ``DIR/config.json``.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import warnings
from pathlib import Path

import torch
from torch import nn

from .distributed import Dist, barrier


@contextlib.contextmanager
def _quiet():
    """DCP warns that it 'assumes a single process' when no process group exists: that is intended."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.distributed is disabled.*")
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.distributed\.checkpoint.*")
        yield


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np

        state["numpy"] = np.random.get_state()
    except ImportError:
        pass
    return state


def set_rng_state(state: dict):
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        import numpy as np

        np.random.set_state(state["numpy"])


def state_dir(run_dir: str | Path) -> Path | None:
    """The newest complete state of a run (``state/``, or ``state.old/`` if a save was cut
    between its two renames); None if there is none."""
    for name in ("state", "state.old"):
        candidate = Path(run_dir) / name
        if (candidate / "trainer.pt").is_file():
            return candidate
    return None


def has_state(run_dir: str | Path) -> bool:
    return state_dir(run_dir) is not None


def saved_step(run_dir: str | Path) -> int | None:
    """The step the run's resumable state was saved at, or None."""
    found = state_dir(run_dir)
    return None if found is None else int(torch.load(found / "trainer.pt", weights_only=False)["step"])


def save_state(run_dir: Path, module: nn.Module, optimizer, trainer: dict, d: Dist):
    """Write the resumable state of every rank (collective: all ranks must call it)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    final, tmp, old = run_dir / "state", run_dir / "state.tmp", run_dir / "state.old"
    if d.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        if (old / "trainer.pt").is_file() and not (final / "trainer.pt").is_file():
            old.rename(final)  # a save cut between its renames: state.old is the complete one
        shutil.rmtree(old, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier(d)
    model_sd, optim_sd = get_state_dict(module, optimizer)
    with _quiet():
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(tmp / "dcp"))
    torch.save(rng_state(), tmp / f"rng-rank{d.rank}.pt")
    barrier(d)
    if d.is_main:
        torch.save(trainer, tmp / "trainer.pt")  # written last: its presence marks a complete state
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    barrier(d)


def load_state(run_dir: Path, module: nn.Module, optimizer, d: Dist) -> dict:
    """Restore model, optimizer and this rank's RNG in place; return the trainer dict."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    found = state_dir(run_dir)
    if found is None:
        raise ValueError(f"{run_dir}: no resumable state (state/trainer.pt)")
    trainer = torch.load(found / "trainer.pt", weights_only=False)
    if trainer.get("world_size", 1) != d.world_size:
        raise ValueError(f"{run_dir} was saved by {trainer.get('world_size', 1)} process(es); "
                         f"resume it with the same number, not {d.world_size}")
    model_sd, optim_sd = get_state_dict(module, optimizer)
    sd = {"model": model_sd, "optim": optim_sd}
    with _quiet():
        dcp.load(sd, checkpoint_id=str(found / "dcp"))
    set_state_dict(module, optimizer, model_state_dict=sd["model"], optim_state_dict=sd["optim"])
    set_rng_state(torch.load(found / f"rng-rank{d.rank}.pt", weights_only=False))
    return trainer


def full_model_state(module: nn.Module, backbone: nn.Module) -> dict[str, torch.Tensor]:
    """The backbone's full, unsharded state dict on the CPU, on rank 0 (other ranks: {}).
    Collective: every rank must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    sd = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    prefix = "model."
    out = {}
    for key, value in sd.items():
        key = key[len("module."):] if key.startswith("module.") else key
        if key.startswith(prefix):
            out[key[len(prefix):]] = value
    if not out:  # with cpu_offload only rank 0 receives the gathered tensors
        return out
    expected = set(backbone.state_dict())
    if set(out) != expected:
        raise RuntimeError(f"internal error: gathered backbone keys differ from the model's: "
                           f"{sorted(set(out) ^ expected)[:5]}")
    return out


def save_weights(path: Path, state_dict: dict[str, torch.Tensor], metadata: dict):
    """Write ``path`` through a temporary file, so an interrupted save leaves the old file whole."""
    try:
        from safetensors.torch import save_file
    except ImportError:
        raise ValueError("saving model.safetensors needs safetensors: pip install safetensors") from None
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={k: json.dumps(v) for k, v in metadata.items()})
    os.replace(tmp, path)
