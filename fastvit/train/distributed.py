"""torch.distributed plumbing: process group from torchrun's environment, and the three strategies.

- ``single``: one process, the objective as it is.
- ``ddp``: ``torch.nn.parallel.DistributedDataParallel`` (gradients averaged).
- ``fsdp``: FSDP2, ``torch.distributed.fsdp.fully_shard`` on every block and then on
  the whole objective, so parameters, gradients and optimizer state are sharded.

The backend is NCCL for CUDA and gloo for the CPU. Nothing here is imported
before a run starts.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

STRATEGIES = ("single", "ddp", "fsdp")


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized: bool = False  # whether this run created the process group (and must destroy it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return dist.is_available() and dist.is_initialized()


def launched_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup(strategy: str, device: str = "auto") -> Dist:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR, ...).

    ``single`` with several processes is refused; ``ddp``/``fsdp`` on one process run
    in a one-member group (so the same code path is exercised).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")
    world = launched_world_size()
    if strategy == "single" and world > 1:
        raise ValueError(f"--strategy single cannot run in {world} processes; use --strategy ddp or fsdp")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA GPU is visible")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device("cuda", local_rank) if device == "cuda" else torch.device("cpu")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if strategy == "single":
        return Dist(device=dev)
    created = False
    if not dist.is_initialized():
        if "MASTER_ADDR" not in os.environ:  # one process started without torchrun
            os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ.get("MASTER_PORT", "29517"),
                              RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=10))
        created = True
    return Dist(dist.get_rank(), dist.get_world_size(), local_rank, dev, created)


def teardown(d: Dist):
    if d.initialized and dist.is_initialized():
        dist.destroy_process_group()


def wrap(objective: nn.Module, strategy: str, d: Dist) -> nn.Module:
    """The module the loop calls: the objective, under DDP, or sharded in place by FSDP2."""
    if strategy == "single":
        return objective
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [d.device.index] if d.device.type == "cuda" else None
        return DistributedDataParallel(objective, device_ids=ids)
    from torch.distributed.fsdp import fully_shard

    for block in objective.model.blocks:
        fully_shard(block)
    fully_shard(objective)
    return objective


def unwrap(module: nn.Module) -> nn.Module:
    """The objective inside a DDP wrapper (FSDP2 shards in place: nothing to unwrap)."""
    return module.module if hasattr(module, "module") and isinstance(module.module, nn.Module) else module


def all_reduce_sum(t: torch.Tensor, d: Dist) -> torch.Tensor:
    if d.active and d.world_size > 1:
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier(d: Dist):
    if d.active and d.world_size > 1:
        dist.barrier()


def broadcast_object(obj, d: Dist):
    """Rank 0's ``obj`` on every rank (e.g. a status or an error message)."""
    if not (d.active and d.world_size > 1):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
