"""LayerNorm implementations, chosen by ``norm_impl``. Same parameters (weight, bias) in each."""

from __future__ import annotations

from torch import nn


class TritonLayerNorm(nn.LayerNorm):
    """nn.LayerNorm computed by fastvit's Triton kernel (fp32 statistics)."""

    def forward(self, x):
        from fastvit.kernels import layer_norm

        return layer_norm(x, self.weight, self.bias, self.eps)


NORM_LAYERS = {"torch": nn.LayerNorm, "triton": TritonLayerNorm}


def norm_layer(impl: str) -> type[nn.LayerNorm]:
    if impl not in NORM_LAYERS:
        raise ValueError(f"unknown norm_impl {impl!r}; valid: {sorted(NORM_LAYERS)}")
    return NORM_LAYERS[impl]
