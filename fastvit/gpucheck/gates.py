"""Correctness gates speed: a model or kernel record whose error against its
reference exceeds its bound is ``failed``, not ``ok``, whatever its speed.

Bounds are on ``max_rel_err`` (max |out - ref| / max |ref|, :func:`fastvit.timing.parity`):

- model rows: the logits of a ViT against the fp32 eager model on the same
  weights and batch. A bf16 ViT-B's logits sit about 1e-2 from fp32's; 6e-2
  leaves room for that and catches a broken kernel (errors of order 1).
- kernel rows: one op's output slice against the fp32 reference. bf16 rounding
  of the output alone is up to 2^-8 (~4e-3) of the largest value.
"""

from __future__ import annotations

MODEL_BOUND = {"bf16": 6e-2, "fp16": 1e-2, "fp32": 1e-3, "tf32": 1e-2}
KERNEL_BOUND = {"bf16": 3e-2, "fp16": 5e-3, "fp32": 1e-3, "tf32": 1e-2}


def bound(record: dict) -> float | None:
    table = MODEL_BOUND if record.get("kind") == "model" else KERNEL_BOUND if record.get("kind") == "kernel" else None
    return None if table is None else table.get(str(record.get("dtype")))


def gate(record: dict) -> dict:
    """``record`` with status ``failed`` (and the reason) when its error is over its bound or not a number."""
    limit = bound(record)
    err = record.get("max_rel_err")
    if limit is None or record.get("status") != "ok":
        return record
    if not isinstance(err, (int, float)) or err != err or err > limit:
        shown = f"{err:.2e}" if isinstance(err, (int, float)) else repr(err)
        return dict(record, status="failed", reason=f"error {shown} over the {record.get('dtype')} bound {limit:.0e} "
                    f"against the fp32 reference (measured speed kept, not trusted)")  # fmt: skip
    return record


def worst_first(records: list[dict]) -> list[dict]:
    """Failed and errored records first, then the rest in their order."""
    rank = {"failed": 0, "error": 1}
    return sorted(records, key=lambda r: rank.get(r.get("status"), 2))
