"""What the Triton attention kernels take, importable without Triton.

The single source for the head dims and dtypes the kernels run
(:mod:`fastvit.kernels.flash_attention` and :mod:`.attention_probs` check their
inputs with it; :func:`supports_attention` / :func:`supports_attention_probs`
are their contracts' ``supports``, which the ``triton``/``auto`` attention
backends ask), for how a head dim is cut into the power-of-two tiles Triton
needs, and for the ops' benchmark cases.
"""

from __future__ import annotations

import torch

from fastvit.kernels.contract import bench_case, device_reason, dtype_reason, first_reason, size_reason

MAX_HEAD_DIM = 128
TORCH_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
DTYPES = tuple(str(d).replace("torch.", "") for d in TORCH_DTYPES)


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


# -- contracts: supports() and benchmark cases ----------------------------------------------


def supports_attention(*, device, dtype, head_dim, dropout_p=0.0, kv_len=None, interpret=None) -> str | None:
    """None when :func:`fastvit.kernels.attention` (and ``attention_qkvpacked``) can take
    (B, H, N, head_dim) inputs of ``dtype`` on ``device``, else why not. ``kv_len``:
    the keys' length when known (queries need at least one key); ``interpret``:
    whether the interpreter counts as a device (default: TRITON_INTERPRET=1)."""
    if not isinstance(dropout_p, (int, float)) or isinstance(dropout_p, bool):
        raise TypeError(f"dropout_p must be a float, got {type(dropout_p).__name__}")
    return first_reason(
        "attention dropout is active (the kernel has none)" if dropout_p > 0 else None,
        device_reason(device, interpret),
        dtype_reason("dtype", dtype, TORCH_DTYPES),
        size_reason("head_dim", head_dim, 1, MAX_HEAD_DIM),
        None if kv_len is None else size_reason("kv_len", kv_len, 1),
    )


def supports_attention_probs(*, device, dtype, head_dim, interpret=None) -> str | None:
    """None when :func:`fastvit.kernels.attention_probs.attention_probs` takes such q, k."""
    return first_reason(
        device_reason(device, interpret),
        dtype_reason("dtype", dtype, TORCH_DTYPES),
        size_reason("head_dim", head_dim, 1, MAX_HEAD_DIM),
    )


def attention_aot_cases() -> list:
    from fastvit.kernels.flash_attention_aot import aot_cases

    return aot_cases()


def attention_probs_aot_cases() -> list:
    from fastvit.kernels.attention_probs import aot_cases

    return aot_cases()


# attention: fastvit's kernel against SDPA forced to each backend, and flash-attn / xformers where installed
ATTENTION_PROVIDERS = ("sdpa-flash", "sdpa-efficient", "sdpa-cudnn", "triton", "flash_attn", "xformers")
ATTENTION_SEQS = (197, 257, 577, 1025)  # ViT-B/16 at 224, ViT-L/14 at 224, ViT-B/16 at 384 and 512
BENCH_HEAD_DIMS = (64, 80)  # ViT-S/B/L, ViT-H/14
MODES = ("fwd", "fwd+bwd")


def attention_bench_cases() -> list:
    return [
        bench_case("attention", "attention", f"N{seq}-D{head_dim}-{dtype}-{mode}-{provider}", slow=dtype != "bf16",
                   seq=seq, head_dim=head_dim, dtype=dtype, mode=mode, provider=provider)
        for dtype in ("bf16", "fp16") for head_dim in BENCH_HEAD_DIMS for seq in ATTENTION_SEQS
        for mode in MODES for provider in ATTENTION_PROVIDERS
    ]  # fmt: skip


def attention_probs_bench_cases() -> list:
    """The maps of one layer, bf16: the kernel against torch's softmax(q k^T * scale)."""
    return [
        bench_case("attention_probs", "attention_probs", f"N{seq}-D{head_dim}-{provider}", seq=seq,
                   head_dim=head_dim, provider=provider)
        for head_dim in BENCH_HEAD_DIMS for seq in (197, 577) for provider in ("torch", "triton")
    ]  # fmt: skip
