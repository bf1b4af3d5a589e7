"""Position-embedding resampling as interpolation matrices: F.interpolate's numbers, and a model
compiled with dynamic sizes trains at new image sizes (issue 24)."""

import pytest
import torch
import torch.nn.functional as F

import fastvit
from fastvit.layers import RESAMPLE_CONVENTIONS, resample_pos_embed
from fastvit.layers.resample import interp_matrix, resize_2d

GRIDS = [(14, 14), (4, 7), (1, 5), (3, 3)]
SIZES = [(1, 1), (2, 3), (7, 7), (14, 14), (16, 20), (24, 24), (37, 5)]
OPTIONS = [(mode, aa, ac) for mode in ("bicubic", "bilinear") for aa in (False, True) for ac in (False, True)]


@pytest.mark.parametrize("mode, antialias, align_corners", OPTIONS)
def test_matrices_reproduce_f_interpolate_exactly_in_fp64(mode, antialias, align_corners):
    g = torch.Generator().manual_seed(0)
    for hw in GRIDS:
        x = torch.randn(1, 3, *hw, generator=g, dtype=torch.float64)
        for size in SIZES:
            ref = F.interpolate(x, size=size, mode=mode, antialias=antialias, align_corners=align_corners)
            got = resize_2d(x, size, mode, antialias, align_corners)
            err = (got - ref).abs().max().item()
            assert err < 1e-12, f"{mode} aa={antialias} ac={align_corners} {hw}->{size}: {err:.2e}"


@pytest.mark.parametrize("mode, antialias, align_corners", OPTIONS)
def test_gradients_match_f_interpolate(mode, antialias, align_corners):
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(1, 2, 9, 4, dtype=torch.float64)
    (ref,) = torch.autograd.grad((F.interpolate(x, size=(9, 4), mode=mode, antialias=antialias,
                                                align_corners=align_corners) * w).sum(), x)
    (got,) = torch.autograd.grad((resize_2d(x, (9, 4), mode, antialias, align_corners) * w).sum(), x)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)


def _reference(pos, new, old, prefix, interpolation, antialias, align_corners):
    """resample_pos_embed as it was: F.interpolate on the grid."""
    grid = pos[:, prefix:].reshape(1, *old, -1).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=new, mode=interpolation, antialias=antialias, align_corners=align_corners)
    return torch.cat([pos[:, :prefix], grid.permute(0, 2, 3, 1).reshape(1, new[0] * new[1], -1)], dim=1)


@pytest.mark.parametrize("convention", sorted(RESAMPLE_CONVENTIONS))
def test_resample_pos_embed_keeps_its_numbers(convention):
    opts = RESAMPLE_CONVENTIONS[convention]
    pos = torch.randn(1, 1 + 14 * 14, 16) * 0.02 * 5  # a trained embedding's scale, with headroom
    for new in [(7, 7), (24, 24), (10, 17)]:
        got = resample_pos_embed(pos, new, (14, 14), 1, **opts)
        ref = _reference(pos, new, (14, 14), 1, **opts)
        assert (got - ref).abs().max().item() < 1e-6, (convention, new)


def test_interp_matrix_rejects_other_modes():
    with pytest.raises(ValueError, match="bilinear"):
        interp_matrix(4, 8, "nearest")


def _tiny(**kw):
    torch.manual_seed(0)
    return fastvit.create_model("vit_tiny_patch16_224", img_size=16, patch_size=8, embed_dim=32, depth=1, num_heads=2,
                                num_classes=3, dynamic_img_size=True, attn_impl="sdpa", **kw)


def _step(model, size, params):
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(size))
    params.zero_grad(set_to_none=True)
    out = model(x)
    out.square().sum().backward()
    return out.detach(), {n: p.grad.clone() for n, p in params.named_parameters()}


@pytest.mark.parametrize("backend, sizes", [("aot_eager", (16, 24, 40)), ("inductor", (24, 32))])
def test_compiled_dynamic_size_training_matches_eager(backend, sizes):
    """fastvit.compile(dynamic=True) + forward/backward at new image sizes: the antialiased bicubic
    resample used to fail here (no meta kernel for its backward with symbolic sizes)."""
    eager = _tiny()
    compiled_model = _tiny()
    compiled_model.load_state_dict(eager.state_dict())
    compiled = fastvit.compile(compiled_model, dynamic=True, backend=backend)
    for size in sizes:
        ref_out, ref_grads = _step(eager, size, eager)
        out, grads = _step(compiled, size, compiled_model)
        torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5, msg=lambda m: f"{backend} {size}px output: {m}")
        for name, g in ref_grads.items():
            torch.testing.assert_close(grads[name], g, rtol=1e-4, atol=1e-5,
                                       msg=lambda m, name=name: f"{backend} {size}px grad {name}: {m}")
        assert grads["pos_embed"].abs().sum() > 0
