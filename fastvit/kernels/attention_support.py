"""What the Triton attention kernels take, importable without Triton.

The single source for the head dims the kernels run
(:mod:`fastvit.kernels.flash_attention` checks its inputs with it, and the
``triton``/``auto`` attention backends route with it) and for how a head dim is
cut into the power-of-two tiles Triton needs.
"""

from __future__ import annotations

MAX_HEAD_DIM = 128
DTYPES = ("float16", "bfloat16", "float32")


def supports_head_dim(head_dim) -> bool:
    """Any head dim from 1 to MAX_HEAD_DIM: tiles are masked (see :func:`head_tiles`)."""
    return isinstance(head_dim, int) and not isinstance(head_dim, bool) and 1 <= head_dim <= MAX_HEAD_DIM


def _next_power_of_2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def head_tiles(head_dim: int) -> tuple[int, int]:
    """(BLOCK_D, BLOCK_D2): the head dim as one power-of-two tile, or as two when
    that pads less (tl.dot needs every side >= 16): 80 -> 64 + 16, 72 -> 64 + 16
    (8 masked), 96 -> 64 + 32, 48 -> 32 + 16; 112 stays one 128-wide tile, as
    64 + 64 pads no less. BLOCK_D2 = 0 means one tile."""
    if not supports_head_dim(head_dim):
        raise ValueError(f"attention: expected head_dim between 1 and {MAX_HEAD_DIM}, got {head_dim!r}")
    whole = max(16, _next_power_of_2(head_dim))
    if head_dim <= 16 or head_dim == whole:
        return whole, 0
    first = whole // 2
    second = max(16, _next_power_of_2(head_dim - first))
    return (first, second) if first + second < whole else (whole, 0)


def backward_head_tiles(head_dim: int, arch: str) -> tuple[int, int]:
    """The backward kernels' tiles on ``arch`` (a fastvit.kernels.tuning table key).

    Split as :func:`head_tiles` on sm_90, where it saves shared memory and
    registers; one padded power-of-two tile on sm_80 and elsewhere, where the
    split dK/dV and dQ kernels spill (Triton 3.9: up to 4.5 KB at head dim 80)
    and the padded ones do not. Both sum the head dimension in the same
    16-wide chunks in the same order (padding adds exact zeros), so the
    backward's scores still match the forward's log-sum-exp.
    """
    first, second = head_tiles(head_dim)
    if arch == "sm90" or second == 0:
        return first, second
    return max(16, _next_power_of_2(head_dim)), 0
