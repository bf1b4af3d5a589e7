"""Per-architecture launch configurations, shared by every kernel.

A kernel module declares its configurations as plain data, one list per
architecture::

    CONFIGS = {
        "sm90": [dict(BLOCK_M=128, BLOCK_N=64, num_warps=8, num_stages=3), ...],
        "sm80": [...],
        "default": [...],   # safe anywhere; its first entry is used in tests
    }

:func:`autotune_configs` turns the list for the GPU in use into
``triton.Config`` objects for ``@triton.autotune``. Under the Triton
interpreter (``TRITON_INTERPRET=1``) it returns only the first "default" entry,
so tests run one configuration; with ``FASTVIT_AUTOTUNE=0`` on a GPU, one entry
of the GPU's table (its first, less those recorded to spill at the launch: see
:func:`selected_entries`), launched without timing. The
ahead-of-time compile test (:mod:`fastvit.aot`) compiles every entry
for the architecture it is listed under and checks it fits shared memory and
uses tensor cores, so no shipped configuration fails on the hardware it names.
"""

from __future__ import annotations

import os

_LAUNCH_KEYS = ("num_warps", "num_stages")


def interpreting() -> bool:
    """True when Triton kernels run on the CPU through the interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def autotune_enabled() -> bool:
    return not interpreting() and os.environ.get("FASTVIT_AUTOTUNE", "1") != "0"


def arch_of(capability: tuple[int, int] | None) -> str:
    """Table key for a CUDA compute capability.

    "sm90" for Hopper and datacenter Blackwell (sm_90, sm_100: ~227 KB shared
    memory per block), "sm80" for Ampere and Ada (the tables fit their 99-163 KB),
    "default" for everything else, consumer Blackwell (sm_120, ~99 KB) included.
    """
    if capability is None:
        return "default"
    major, _ = capability
    if major in (9, 10):
        return "sm90"
    if major == 8:
        return "sm80"
    return "default"


def current_arch() -> str:
    import torch

    if interpreting() or not torch.cuda.is_available():
        return "default"
    return arch_of(torch.cuda.get_device_capability())


def split(entry: dict) -> tuple[dict, dict]:
    """Split one table entry into (constexpr meta-parameters, launch options)."""
    meta = {k: v for k, v in entry.items() if k not in _LAUNCH_KEYS}
    launch = {k: entry[k] for k in _LAUNCH_KEYS if k in entry}
    return meta, launch


def selected_entries(table: dict[str, list[dict]], arch: str | None = None, *, pruned: bool = False) -> list[dict]:
    """The entries the autotuner holds on ``arch`` (the current GPU by default).

    Under the interpreter: the first "default" entry. With ``FASTVIT_AUTOTUNE=0``
    on a GPU: the first entry of the GPU's table -- or, for a kernel whose
    autotuner prunes at launch (``pruned``: the attention kernels, which drop
    the entries recorded to spill at the launch's head dim), the whole table,
    which that prune narrows to its first kept entry (one config: Triton
    launches it without timing). Otherwise the GPU's whole table.
    """
    if interpreting():
        return table["default"][:1]
    arch = current_arch() if arch is None else arch
    entries = table.get(arch) or table["default"]
    return entries if autotune_enabled() or pruned else entries[:1]


def _untimed(kernel_call, quantiles=None, **_):
    """An autotuner benchmark that launches nothing and times nothing (every config scores 0: the first wins)."""
    return [0.0] * len(quantiles) if quantiles else 0.0


def autotune_do_bench():
    """``do_bench`` for an ``@triton.autotune`` that prunes at launch: None (Triton's timing) when autotuning
    is on, else :func:`_untimed`. Triton 3.6's autotuner times a configuration left alone after pruning
    (3.8 skips it), so without this ``FASTVIT_AUTOTUNE=0`` would still time launches on 3.6."""
    return None if autotune_enabled() else _untimed


def autotune_configs(table: dict[str, list[dict]], *, pruned: bool = False) -> list:
    import triton

    configs = []
    for entry in selected_entries(table, pruned=pruned):
        meta, launch = split(entry)
        configs.append(triton.Config(meta, **launch))
    return configs
