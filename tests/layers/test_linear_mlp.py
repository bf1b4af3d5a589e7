"""``fastvit.layers.linear.triton_mlp_forward``: a triton-impl Mlp computed as one fused op."""

from __future__ import annotations

import pytest
import torch

from torch import nn

from fastvit.layers.kernel_ops import kernel_op
from fastvit.layers.linear import TritonLinearGELU, TritonResidualLinear, triton_mlp_forward
from fastvit.layers.mlp import Mlp

TRITON_LAYERS = dict(fc1_layer=TritonLinearGELU, act_layer=nn.Identity, fc2_layer=TritonResidualLinear)


@pytest.mark.parametrize("training,drop_path", [(False, 0.0), (True, 0.5), (True, 0.0)])
def test_matches_the_mlp_forward_and_gradients(training, drop_path):
    torch.manual_seed(0)
    mlp = Mlp(32, 128, drop_path=drop_path, **TRITON_LAYERS).train(training)
    x, r = torch.randn(4, 5, 32), torch.randn(4, 5, 32)
    dout = torch.randn(4, 5, 32)
    results = []
    for fn in (lambda x, r: mlp(x, r), lambda x, r: triton_mlp_forward(kernel_op("mlp_residual"), mlp.fc1, mlp.drop, mlp.fc2, x, r)):
        torch.manual_seed(1)  # the same stochastic-depth draw for both
        xs, rs = x.clone().requires_grad_(), r.clone().requires_grad_()
        out = fn(xs, rs)
        params = list(mlp.parameters())
        results.append((out, *torch.autograd.grad(out, [xs, rs, *params], dout)))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=2e-5)


def test_dropout_while_training_falls_back():
    """Element-wise dropout in training: the separate ops, with the same dropout draws as Mlp.forward."""
    mlp = Mlp(16, 64, drop=0.5, **TRITON_LAYERS).train()
    x, r = torch.randn(2, 3, 16), torch.randn(2, 3, 16)
    torch.manual_seed(2)
    out = triton_mlp_forward(kernel_op("mlp_residual"), mlp.fc1, mlp.drop, mlp.fc2, x, r)
    torch.manual_seed(2)
    torch.testing.assert_close(out, mlp.fc2(mlp.drop(mlp.fc1(x)), r), rtol=0, atol=0)
    torch.manual_seed(3)
    assert not torch.equal(out, triton_mlp_forward(kernel_op("mlp_residual"), mlp.fc1, mlp.drop, mlp.fc2, x, r))
