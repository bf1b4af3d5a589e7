"""``fastvit train``: fine-tuning, distributed training and masked-patch pretraining.

Modules, in the order they build on each other:

- :mod:`.data`: scikit-learn digits (fixed split), image folders, :class:`ShardedSampler`.
- :mod:`.objectives`: :class:`Supervised` and :class:`MaskedPatchPrediction` (ViT paper, B.1.2).
- :mod:`.optim`: AdamW groups (weight decay, layer decay), warmup + cosine schedule.
- :mod:`.distributed`: torchrun process group; ``single`` | ``ddp`` | ``fsdp`` (FSDP2).
- :mod:`.checkpointing`: resumable state (torch.distributed.checkpoint) and final safetensors.
- :mod:`.run_folder`: the run folder as a model (timm local-dir ``config.json``), :func:`load_run`.
- :mod:`.preflight`: what a run lacks, found before its first step; :mod:`.interrupt`: Ctrl-C.
- :mod:`.metrics`: ``metrics.jsonl`` and ``curves.png``.
- :mod:`.loop`: :class:`TrainConfig` and :func:`train`.
- :mod:`.command`: the ``fastvit train`` argparse front end.

Importing this package imports only the command's argparse code; torch,
scikit-learn, safetensors, matplotlib and tqdm load when a run starts.
"""

from __future__ import annotations

from .command import add_parser, run

__all__ = ["add_parser", "run", "TrainConfig", "train", "load_run"]


def __getattr__(name):
    if name in ("TrainConfig", "train"):
        from . import loop

        return getattr(loop, name)
    if name == "load_run":
        from .run_folder import load_run

        return load_run
    raise AttributeError(f"module 'fastvit.train' has no attribute {name!r}")
