"""Whole-model parity (fused ViT logits and parameter gradients vs an fp64
reference) and the compute-sanitizer memcheck of a small case of every op."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys

# Norm-wise relative error budget on top of 2x the same-dtype torch model's.
MODEL_SLACK = {"bf16": 2e-3, "fp16": 5e-4, "fp32": 1e-5}


def _relative(a, ref) -> float:
    ref = ref.double()
    norm = ref.norm().item()
    diff = (a.double() - ref).norm().item()
    return diff / norm if norm > 0 else diff


def _logits_and_grads(model, x, y):
    import torch.nn.functional as F

    model.zero_grad(set_to_none=True)
    logits = model(x)
    F.cross_entropy(logits.double(), y).backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return logits.detach(), grads


def fused_model_parity(*, smoke: bool, device: str) -> list[dict]:
    """Fused model (Triton attention, norms, GEMMs) and the SDPA/torch model in the
    same low precision, both against the fp64 eager model on the same weights and
    batch: the fused model passes when its logits' and every parameter gradient's
    norm-wise error is at most 2x the torch model's plus a small slack."""
    import torch

    import fastvit
    from fastvit.bench import environment, make_record, torch_dtype

    if smoke:
        name, dtype, batch = "vit-toy", "fp32", 2
        cfg = fastvit.ViTConfig(img_size=16, patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=10)
    else:
        name, dtype, batch = "vit_base_patch16_224", "bf16", 8
        cfg = fastvit.get_config(name)
    torch.manual_seed(0)
    parts = dict(norm_impl="torch", linear_impl="torch")
    reference = fastvit.VisionTransformer(cfg.replace(attn_impl="eager", **parts))
    state = {k: v.detach().clone() for k, v in reference.state_dict().items()}
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, cfg.in_chans, *cfg.img_size, generator=gen)
    y = torch.randint(0, cfg.num_classes, (batch,), generator=gen).to(device)
    dt = torch_dtype(dtype)
    results = {}
    for label, impls, run_dtype in (
        ("fp64", dict(attn_impl="eager", **parts), torch.float64),
        ("torch", dict(attn_impl="sdpa", **parts), dt),
        ("fused", dict(attn_impl="triton", norm_impl="triton", linear_impl="triton"), dt),
    ):
        model = fastvit.VisionTransformer(cfg.replace(**impls))
        model.load_state_dict(state)
        model.to(device=device, dtype=run_dtype).eval()
        results[label] = _logits_and_grads(model, x.to(device=device, dtype=run_dtype), y)
        del model
    (ref_logits, ref_grads), (t_logits, t_grads), (f_logits, f_grads) = results["fp64"], results["torch"], results["fused"]
    env = environment(device)
    records = []
    tensors = [("logits", f_logits, t_logits, ref_logits)] + [
        (f"grad:{n}", f_grads.get(n), t_grads[n], ref_grads[n]) for n in ref_grads
    ]
    worst, failures = (None, -1.0), []
    for tensor, fused, eager, ref in tensors:
        if fused is None:
            failures.append(f"{tensor}: no gradient from the fused model")
            continue
        err, err_torch = _relative(fused, ref), _relative(eager, ref)
        if not torch.isfinite(fused).all() or err > 2 * err_torch + MODEL_SLACK[dtype]:
            failures.append(f"{tensor}: {err:.2e} vs torch {err_torch:.2e}")
        if err > worst[1]:
            worst = (tensor, err)
    logits_err = _relative(f_logits, ref_logits)
    records.append(make_record(
        name=f"{name}/{dtype}/b{batch}/fused-vs-fp64", kind="model_parity", model=name, variant="fused",
        mode="fwd+bwd", dtype=dtype, batch=batch, status="ok" if not failures else "failed",
        reason="; ".join(failures[:8]) or f"worst tensor {worst[0]}: {worst[1]:.2e}; logits {logits_err:.2e} "
        f"(torch {dtype}: {_relative(t_logits, ref_logits):.2e})",
        max_rel_err=worst[1], max_abs_err=(f_logits.double() - ref_logits).abs().max().item(), **env,
    ))  # fmt: skip
    return records


SANITIZED = """
import torch
from fastvit import kernels
torch.manual_seed(0)
d = dict(device="cuda", dtype=torch.bfloat16)
q, k, v = (torch.randn(1, 2, 37, 64, **d, requires_grad=True) for _ in range(3))
kernels.attention(q, k, v).sum().backward()
x, y = (torch.randn(37, 192, **d, requires_grad=True) for _ in range(2))
w, b = torch.ones(192, **d, requires_grad=True), torch.zeros(192, **d, requires_grad=True)
kernels.layer_norm(x, w, b).sum().backward()
s, h = kernels.add_layer_norm(x, y, w, b)
(s.sum() + h.sum()).backward()
w1, b1 = torch.randn(256, 192, **d, requires_grad=True), torch.randn(256, **d, requires_grad=True)
kernels.linear_gelu(x, w1, b1).sum().backward()
kernels.linear_residual(kernels.linear_gelu(x, w1, b1), w1.t().contiguous(), b, x).sum().backward()
if torch.cuda.get_device_capability()[0] >= 9:  # the Hopper TMA GEMM, which auto may pick on sm_90
    xt = torch.randn(64, 192, **d, requires_grad=True)
    kernels.linear_gelu_tma(xt, w1, b1).sum().backward()
    kernels.linear_residual_tma(kernels.linear_gelu_tma(xt, w1, b1), w1.t().contiguous(), b, xt).sum().backward()
torch.cuda.synchronize()
print("sanitized case done")
"""


def sanitizer_binary() -> str | None:
    found = shutil.which("compute-sanitizer")
    for candidate in (found, "/usr/local/cuda/bin/compute-sanitizer", "/usr/local/cuda/compute-sanitizer/compute-sanitizer"):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


def memcheck(*, device: str, timeout: float, log=print) -> list[dict]:
    """``compute-sanitizer --tool memcheck`` over :data:`SANITIZED` (skipped without the binary or a GPU)."""
    from fastvit.bench import environment, make_record

    env = environment(device)
    fields = dict(name="compute-sanitizer/memcheck", kind="sanitizer", op="all", variant="triton", **env)
    tool = sanitizer_binary()
    if tool is None or device != "cuda":
        why = "compute-sanitizer not found" if tool is None else "no CUDA GPU"
        return [make_record(status="skipped", reason=why, **fields)]
    cmd = [tool, "--tool", "memcheck", "--error-exitcode", "99", sys.executable, "-c", SANITIZED]
    # One config per kernel, launched untimed (autotuning under the sanitizer would take minutes), in a
    # process group of its own so nothing of it outlives the step and skews the timings after it.
    env = dict(os.environ, FASTVIT_AUTOTUNE="0")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        text, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return [make_record(status="timeout", reason=f"memcheck did not finish in {timeout:.0f} s", **fields)]
    log(text[-6000:])
    summary = re.search(r"ERROR SUMMARY: (\d+) error", text)
    errors = int(summary.group(1)) if summary else None
    ok = proc.returncode == 0 and errors == 0 and "sanitized case done" in text
    reason = f"exit {proc.returncode}, {errors if errors is not None else 'unknown'} errors"
    return [make_record(status="ok" if ok else "failed", reason=reason, **fields)]
