"""What a checkpoint entry must be before anything is copied into a model.

``load_state_dict`` copies parameter by parameter and reports a tensor it
cannot copy only after the ones before it were written. So every entry is
checked here first: a string key, a dense tensor (strided layout, not sparse,
quantized, nested or an uninitialized lazy parameter) holding data (not on the
meta device) of a real floating-point dtype.
"""

from __future__ import annotations

import torch
from torch import nn


def shorten(keys, n: int = 8) -> str:
    keys = list(keys)
    return ", ".join(map(str, keys[:n])) + (f", ... ({len(keys) - n} more)" if len(keys) > n else "")


def tensor_problem(value, floating: bool = True) -> str | None:
    """None when ``value`` can be copied into a floating-point parameter, else what is wrong with it."""
    if not isinstance(value, torch.Tensor):
        return f"a {type(value).__name__}, not a tensor"
    if isinstance(value, nn.parameter.UninitializedTensorMixin):
        return "an uninitialized (lazy) parameter"
    if value.is_nested:
        return "a nested tensor"
    if value.layout != torch.strided:
        return f"a {str(value.layout).replace('torch.', '')} tensor (expected a dense, strided one)"
    if value.is_quantized:
        return f"a quantized tensor ({value.dtype})"
    if value.device.type == "meta":
        return "a tensor on the meta device (it holds no data)"
    if floating and not value.is_floating_point():
        return f"a {str(value.dtype).replace('torch.', '')} tensor (expected floating point)"
    return None


def check_entries(entries: dict, source: str, floating: bool = True) -> None:
    """``ValueError`` naming every key that is not a string and every value :func:`tensor_problem` rejects."""
    bad_keys = [k for k in entries if not isinstance(k, str)]
    if bad_keys:
        raise ValueError(f"{source}: state dict keys must be strings, found {shorten(map(repr, bad_keys), 5)}")
    problems = {}
    for key, value in entries.items():
        # BatchNorm's step counter (the ResNet-D and MobileCLIP stems) is an integer buffer
        problem = tensor_problem(value, floating and not str(key).endswith(".num_batches_tracked"))
        if problem is not None:
            problems.setdefault(problem, []).append(key)
    if problems:
        what = "; ".join(f"{shorten(keys, 5)}: {problem}" for problem, keys in problems.items())
        raise ValueError(f"{source}: expected a dict of dense floating-point tensors with data; {what}")
