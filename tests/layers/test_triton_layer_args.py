"""The Triton layer classes take issue 14's kernel arguments: GELU ``approximate`` and a LayerScale ``gamma``.

Each fused layer is compared with its separate-ops twin (same weights, fp32,
interpreter on CPU) on the output and on every gradient, ``gamma``'s included.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fastvit.kernels.reference import gelu_ref
from fastvit.layers.activations import GELU_APPROXIMATE, gelu_approximate
from fastvit.layers.linear import (
    ResidualLinear, TritonLinearGELU, TritonResidualLinear, triton_mlp_forward,
)  # fmt: skip
from fastvit.layers.mlp import Mlp, TritonMlp


def _grads(module_fn, leaves, dout):
    leaves = [t.detach().clone().requires_grad_() for t in leaves]
    out = module_fn(*leaves)
    return (out, *torch.autograd.grad(out, leaves, dout))


def _assert_all_close(a, b, tol=2e-5):
    for i, (x, y) in enumerate(zip(a, b)):
        torch.testing.assert_close(x, y, atol=tol, rtol=tol, msg=lambda m, i=i: f"tensor {i}: {m}")


def test_act_layer_names_map_to_approximate():
    assert {name: gelu_approximate(name) for name in GELU_APPROXIMATE} == {
        "gelu": "none", "gelu_tanh": "tanh", "quick_gelu": "quick"}  # fmt: skip
    with pytest.raises(ValueError, match="act_layer 'silu' has no fused GELU epilogue"):
        gelu_approximate("silu")
    with pytest.raises(ValueError, match="approximate must be one of"):
        TritonLinearGELU(8, 16, approximate="quick_gelu")


@pytest.mark.parametrize("act_layer", sorted(GELU_APPROXIMATE))
def test_triton_linear_gelu_approximate(act_layer):
    torch.manual_seed(0)
    layer = TritonLinearGELU(24, 40, approximate=gelu_approximate(act_layer))
    assert f"approximate={layer.approximate!r}" in repr(layer)
    x = torch.randn(3, 5, 24)
    expected = gelu_ref(nn.functional.linear(x, layer.weight, layer.bias), layer.approximate)
    torch.testing.assert_close(layer(x), expected, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("training,drop,drop_path", [(False, 0.0, 0.0), (True, 0.0, 0.5), (True, 0.3, 0.0)])
def test_triton_residual_linear_gamma(training, drop, drop_path):
    """Epilogue gamma (or, with dropout while training, the fallback) equals the separate ops, dgamma too."""
    torch.manual_seed(1)
    fused = TritonResidualLinear(24, 40, drop=drop, drop_path=drop_path).train(training)
    plain = ResidualLinear(24, 40, drop=drop, drop_path=drop_path).train(training)
    plain.load_state_dict(fused.state_dict())
    x, r, gamma, dout = torch.randn(4, 3, 24), torch.randn(4, 3, 40), torch.rand(40) + 0.5, torch.randn(4, 3, 40)
    results = []
    for layer in (fused, plain):
        torch.manual_seed(2)  # the same dropout / stochastic-depth draws
        results.append(_grads(lambda x, r, g, w, b, layer=layer: _forward_with(layer, w, b, x, r, g),
                              (x, r, gamma, fused.weight, fused.bias), dout))  # fmt: skip
    _assert_all_close(*results)
    assert results[0][3].abs().sum() > 0, "gamma must receive a gradient"


def _forward_with(layer, weight, bias, x, r, gamma):
    """``layer(x, r, gamma)`` with ``weight`` / ``bias`` swapped in (so the gradient reaches these leaves)."""
    saved = layer.weight, layer.bias
    del layer.weight, layer.bias
    layer.weight, layer.bias = weight, bias
    try:
        return layer(x, r, gamma)
    finally:
        del layer.weight, layer.bias
        layer.weight, layer.bias = saved


@pytest.mark.parametrize("approximate", ["none", "tanh", "quick"])
@pytest.mark.parametrize("training", [False, True])
def test_triton_mlp_gamma_and_approximate(approximate, training):
    """TritonMlp (one fused op) against the reference built from the same weights."""
    from fastvit.kernels.reference import mlp_residual_ref

    torch.manual_seed(3)
    mlp = TritonMlp(16, 64, drop_path=0.0, approximate=approximate).train(training)
    assert mlp.fc1.approximate == approximate
    x, r, gamma, dout = torch.randn(2, 3, 16), torch.randn(2, 3, 16), torch.rand(16) + 0.5, torch.randn(2, 3, 16)
    params = (mlp.fc1.weight, mlp.fc1.bias, mlp.fc2.weight, mlp.fc2.bias)
    leaves = [t.detach().clone().requires_grad_() for t in (x, r, gamma)]
    out = mlp(leaves[0], leaves[1], leaves[2])
    ours = (out, *torch.autograd.grad(out, [*leaves, *params], dout))
    ref_leaves = [t.detach().clone().requires_grad_() for t in (x, r, gamma, *params)]
    xr, rr, gr, w1, b1, w2, b2 = ref_leaves
    ref = mlp_residual_ref(xr, w1, b1, w2, b2, rr, approximate, upcast=False, gamma=gr)
    expected = (ref, *torch.autograd.grad(ref, ref_leaves, dout))
    _assert_all_close(ours, expected)


def test_triton_mlp_forward_default_approximate_is_fc1s():
    torch.manual_seed(4)
    mlp = TritonMlp(16, 64, approximate="quick")
    x, r = torch.randn(2, 3, 16), torch.randn(2, 3, 16)
    torch.testing.assert_close(triton_mlp_forward(mlp.mlp_residual, mlp.fc1, mlp.drop, mlp.fc2, x, r), mlp(x, r))
    other = triton_mlp_forward(mlp.mlp_residual, mlp.fc1, mlp.drop, mlp.fc2, x, r, approximate="none")
    assert (other - mlp(x, r)).abs().max() > 1e-4


def test_plain_mlp_gamma_matches_timm_layer_scale():
    """The separate-ops Mlp applies gamma as timm's LayerScale: residual + gamma * mlp(x)."""
    torch.manual_seed(5)
    mlp = Mlp(16, 64)
    x, r, gamma = torch.randn(2, 3, 16), torch.randn(2, 3, 16), torch.rand(16)
    branch = mlp.fc2(mlp.drop(mlp.act(mlp.fc1(x))), torch.zeros_like(r))
    torch.testing.assert_close(mlp(x, r, gamma), r + gamma * branch)
