"""Which attention configurations spill registers, and the autotuner's pruning of them.

Whether a configuration spills depends on the architecture, the head tiles the
launcher picks there (:func:`fastvit.kernels._attention_tiles.head_tiles` for
the forward, :func:`~fastvit.kernels._attention_tiles.backward_head_tiles` for
the backward, which pads on sm_80) and whether the head dim divides by 16: the
models launch on views of packed buffers whose head stride is the head dim, so
at 72, 88 or 104 Triton cannot prove the tiles 16-byte aligned and loads them
through registers. Those three make a *tile class*; 80, 96 and 128 share one in
the sm_80 backward (one padded 128-wide tile, aligned).

:data:`SPILLS` records, per (arch, kernel, tile class), the configurations the
compile check measured to spill (stack bytes, bf16, Triton 3.9). The autotuner
drops them before benchmarking (:func:`early_prune`, Triton's
``prune_configs_by``); the compile check (fastvit.aot.attention)
compiles every other configuration and fails any that spills, and
tests/kernels/test_flash_attention_aot_spills.py compiles every recorded one and
fails any that no longer spills, so the record cannot drift from the compiler
in either direction. A tile class with no record prunes nothing; one where every
entry spills (the forward at 104 on sm_80, the dK/dV kernel at 104 on sm_90)
prunes nothing either, and the autotuner ranks the spilling entries on the GPU.
With ``FASTVIT_AUTOTUNE=0`` the prune keeps only its first kept entry, so the
one configuration launched is spill-free wherever the table has one.

The prune reads ``Config.kwargs`` / ``num_warps`` / ``num_stages`` of whatever it is given.
"""

from __future__ import annotations

from fastvit.kernels._attention_tiles import backward_head_tiles, head_tiles

# (BLOCK_D, BLOCK_D2, head_dim % 16 == 0) of the head dims the compile check measures.
_PADDED_ALIGNED = (128, 0, True)  # the backward at 80, 96, 128 on sm_80
_PADDED_UNALIGNED = (128, 0, False)  # the backward at 72, 88, 104 on sm_80; every kernel at 104 on sm_90
_SPLIT_32_UNALIGNED = (64, 32, False)  # 88 as 64 + 32 (the forward; the backward on sm_90)
# (arch, kernel, tile class) -> {(BLOCK_M, BLOCK_N, num_warps, num_stages): stack bytes}
SPILLS = {
    ("sm80", "attention_bwd_dkdv", _PADDED_UNALIGNED): {
        (64, 128, 8, 2): 5448, (32, 128, 8, 2): 552, (16, 128, 8, 2): 328, (32, 64, 4, 3): 136,
    },
    ("sm80", "attention_bwd_dkdv", _PADDED_ALIGNED): {(64, 128, 8, 2): 1576, (32, 128, 8, 2): 3120},
    ("sm80", "attention_bwd_dq", _PADDED_UNALIGNED): {
        (128, 32, 8, 2): 240, (128, 16, 8, 2): 48, (64, 32, 4, 3): 104, (64, 64, 8, 2): 80,
    },
    # The giant CLIP / SigLIP head dims (the compile check's "wide" tier, -m slow).
    ("sm80", "attention_fwd", _PADDED_UNALIGNED): {(128, 64, 8, 3): 160, (128, 32, 8, 3): 24, (64, 64, 8, 2): 464},
    ("sm80", "attention_fwd", _SPLIT_32_UNALIGNED): {(128, 64, 8, 3): 32},
    ("sm90", "attention_fwd", _PADDED_UNALIGNED): {(128, 128, 8, 2): 192},
    ("sm90", "attention_fwd", _SPLIT_32_UNALIGNED): {(64, 64, 4, 3): 32},
    ("sm90", "attention_bwd_dkdv", _PADDED_UNALIGNED): {(32, 128, 8, 3): 160, (32, 64, 4, 3): 48, (64, 64, 8, 2): 40},
    ("sm90", "attention_bwd_dkdv", _SPLIT_32_UNALIGNED): {(32, 128, 8, 3): 80, (32, 64, 4, 3): 80},
    ("sm90", "attention_bwd_dq", _PADDED_UNALIGNED): {(128, 32, 8, 3): 64, (128, 64, 8, 2): 32},
}  # fmt: skip
KERNELS = ("attention_fwd", "attention_bwd_dkdv", "attention_bwd_dq")


def tile_class(head_dim: int, arch: str, kernel: str) -> tuple[int, int, bool]:
    """(BLOCK_D, BLOCK_D2, head dim divisible by 16) of ``kernel`` at ``head_dim`` on ``arch``."""
    if kernel not in KERNELS:
        raise ValueError(f"expected kernel in {KERNELS}, got {kernel!r}")
    tiles = head_tiles(head_dim) if kernel == "attention_fwd" else backward_head_tiles(head_dim, arch)
    return (*tiles, head_dim % 16 == 0)


def entry_key(entry: dict) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) of a table entry (see fastvit.kernels.tuning)."""
    try:
        return entry["BLOCK_M"], entry["BLOCK_N"], entry["num_warps"], entry["num_stages"]
    except KeyError as e:
        raise ValueError(f"expected an entry with BLOCK_M, BLOCK_N, num_warps and num_stages, got {entry!r}") from e


def spill_bytes(arch: str, kernel: str, head_dim: int, entry: dict) -> int | None:
    """Recorded stack bytes of ``entry`` for ``kernel`` at ``head_dim`` on ``arch``; None when it does not spill."""
    if kernel not in KERNELS:
        raise ValueError(f"expected kernel in {KERNELS}, got {kernel!r}")
    return SPILLS.get((arch, kernel, tile_class(head_dim, arch, kernel)), {}).get(entry_key(entry))


def spill_free(entries: list[dict], arch: str, kernel: str, head_dim: int) -> list[dict]:
    """The entries that do not spill there, in order; all of them if every one is recorded to spill
    (a record that pruned a whole table would otherwise leave the autotuner nothing to launch)."""
    kept = [e for e in entries if spill_bytes(arch, kernel, head_dim, e) is None]
    return kept or list(entries)


def early_prune(kernel: str):
    """A Triton ``early_config_prune`` for ``kernel``: drops the configurations recorded to spill
    on the GPU in use at the launch's ``HEAD_DIM`` (part of the autotuning key, so a cached choice
    is never reused at a head dim where it spills)."""
    if kernel not in KERNELS:
        raise ValueError(f"expected kernel in {KERNELS}, got {kernel!r}")

    def prune(configs, named_args, **kwargs):
        from fastvit.kernels.tuning import autotune_enabled, current_arch

        head_dim = kwargs.get("HEAD_DIM", named_args.get("HEAD_DIM"))
        entries = [dict(c.kwargs, num_warps=c.num_warps, num_stages=c.num_stages) for c in configs]
        kept = {id(e) for e in spill_free(entries, current_arch(), kernel, head_dim)}
        kept = [c for c, e in zip(configs, entries) if id(e) in kept]
        return kept if autotune_enabled() else kept[:1]  # FASTVIT_AUTOTUNE=0: one launch, untimed

    prune.kernel = kernel
    return prune
