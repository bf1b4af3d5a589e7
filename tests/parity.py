"""Error-budget assertions in the flash-attention style.

A fused op passes when its error against an upcast (fp64) reference is at most
``factor`` times the error of eager PyTorch in the same low precision, plus an
absolute slack ``atol``:

    max|out - ref| <= factor * max|out_pt - ref| + atol

On failure the message says which tensor, where the worst element is and by
how much each side missed.
"""

from __future__ import annotations

import torch


def max_abs_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


def assert_close_vs_ref(out, out_pt, ref, *, factor=2.0, atol=1e-5, rtol=0.0, name="output"):
    """Assert the fused ``out`` is within ``factor`` x the eager error of ``out_pt``.

    ``rtol`` adds ``rtol * max|ref|`` to the slack, for GEMM-sized outputs.
    """
    assert out.shape == ref.shape, f"{name}: shape {tuple(out.shape)} != reference {tuple(ref.shape)}"
    assert torch.isfinite(out).all(), f"{name}: {(~torch.isfinite(out)).sum().item()} non-finite elements"
    ref = ref.double()
    err = (out.double() - ref).abs()
    err_pt = max_abs_err(out_pt, ref)
    scale = ref.abs().max().item() if ref.numel() else 0.0
    budget = factor * err_pt + atol + rtol * scale
    worst = err.max().item() if err.numel() else 0.0
    if worst > budget:
        idx = tuple(int(i) for i in torch.unravel_index(err.argmax(), err.shape))
        raise AssertionError(
            f"{name}: max error {worst:.3e} at {idx} exceeds budget {budget:.3e} "
            f"(= {factor} x eager error {err_pt:.3e} + atol {atol:.1e} + rtol {rtol:.1e} x |ref| {scale:.3e}); "
            f"value {out.flatten()[err.argmax()].item():.6g} vs reference {ref.flatten()[err.argmax()].item():.6g}"
        )


def poison_(t: torch.Tensor) -> torch.Tensor:
    """Fill with NaN (or the dtype's max for integers) so unwritten elements fail."""
    if t.is_floating_point():
        return t.fill_(float("nan"))
    return t.fill_(torch.iinfo(t.dtype).max)
