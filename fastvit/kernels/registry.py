"""The old name of :mod:`fastvit.kernels.ops`'s lookups, kept for existing callers.

``registry.supports(op, **call)``, ``registry.describe()``, ``registry.triton_installed()``,
``registry.op_names()`` and ``registry.get(op)`` answer exactly what :mod:`.ops` does;
new code reads :mod:`fastvit.kernels.ops` (``ops.declaration(op).supports(...)``).
"""

from __future__ import annotations

from fastvit.kernels.ops import OPS, TRITON_MISSING, declaration, describe, supports, triton_installed

__all__ = ["OPS", "TRITON_MISSING", "declaration", "describe", "get", "op_names", "supports", "triton_installed"]

get = declaration


def op_names() -> list[str]:
    return list(OPS)
