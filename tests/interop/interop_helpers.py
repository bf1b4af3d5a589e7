"""Helpers shared by the interop tests (random perturbed weights, relative-error checks)."""

import torch


def perturb(module: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> torch.nn.Module:
    """Random offsets on every parameter (LayerNorm weights, biases, tokens too), so zero/one
    inits cannot hide a swapped or dropped weight."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)
    return module


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    """max |got - ref| / max |ref|: the relative error the acceptance bound (1e-5, fp32) is on."""
    assert got.shape == ref.shape, (got.shape, ref.shape)
    return ((got.double() - ref.double()).abs().max() / ref.double().abs().max().clamp_min(1e-30)).item()


def assert_rel(got, ref, tol: float = 1e-5, what: str = ""):
    if isinstance(ref, (tuple, list)):
        assert isinstance(got, (tuple, list)) and len(got) == len(ref), f"{what}: {type(got)} vs {type(ref)}"
        for i, (a, b) in enumerate(zip(got, ref)):
            assert_rel(a, b, tol, f"{what}[{i}]")
        return
    if isinstance(ref, dict):
        assert isinstance(got, dict) and got.keys() == ref.keys(), f"{what}: keys {list(got)} vs {list(ref)}"
        for k in ref:
            assert_rel(got[k], ref[k], tol, f"{what}[{k!r}]")
        return
    err = rel_err(got, ref)
    assert err <= tol, f"{what}: relative error {err:.3g} > {tol:g}"


def image(*size, batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(seed))
