"""Ahead-of-time compilation for GPUs that are not present.

Triton can compile a kernel for any CUDA target on a machine without a GPU.
Each kernel module lists, in ``aot_cases()``, one :class:`AotCase` per shipped
configuration; :func:`compile_case` compiles it and :func:`check_case` asserts
that it fits the architecture's shared memory and that its matrix products use
the tensor cores (``mma`` on sm_80, ``wgmma`` on sm_90).
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Usable shared memory per block, bytes (A100: 164 KB, H100: 228 KB minus 1 KB reserved).
SHARED_MEMORY_LIMIT = {80: 163 * 1024, 90: 227 * 1024}
CAPABILITY = {"sm80": 80, "sm90": 90}
# Instruction that proves the tensor cores are used, per target.
TENSOR_CORE_OP = {80: "mma.sync", 90: "wgmma.mma_async"}


@dataclass(frozen=True)
class AotCase:
    """One kernel at one configuration for one architecture."""

    name: str
    fn: object  # the @triton.jit function (unwrapped from any autotuner)
    signature: dict  # argument name -> triton type string ("*bf16", "i32", "fp32", "constexpr")
    constexprs: dict  # constexpr argument name -> value
    arch: str  # "sm80" | "sm90"
    num_warps: int = 4
    num_stages: int = 3
    # Tensor-core op expected in the PTX; None when the kernel does no tl.dot.
    # Defaults to TENSOR_CORE_OP of the arch.
    tensor_core_op: str | None = field(default="auto")

    @property
    def capability(self) -> int:
        return CAPABILITY[self.arch]

    def expected_op(self) -> str | None:
        if self.tensor_core_op == "auto":
            return TENSOR_CORE_OP[self.capability]
        return self.tensor_core_op

    def __str__(self) -> str:  # readable pytest ids
        return f"{self.name}-{self.arch}-w{self.num_warps}s{self.num_stages}"


def compile_case(case: AotCase):
    import triton
    from triton.backends.compiler import GPUTarget

    src = triton.compiler.ASTSource(fn=case.fn, signature=case.signature, constexprs=case.constexprs)
    target = GPUTarget("cuda", case.capability, 32)
    return triton.compile(src, target=target, options={"num_warps": case.num_warps, "num_stages": case.num_stages})


def check_case(case: AotCase) -> dict:
    """Compile and verify; returns a small report (shared bytes, tensor-core op found)."""
    compiled = compile_case(case)
    ptx = compiled.asm["ptx"]
    shared = compiled.metadata.shared
    limit = SHARED_MEMORY_LIMIT[case.capability]
    if shared > limit:
        raise AssertionError(f"{case}: uses {shared} B of shared memory, {case.arch} allows {limit} B")
    op = case.expected_op()
    if op is not None and op not in ptx:
        raise AssertionError(f"{case}: expected tensor-core instruction {op!r} in the PTX, found none")
    return {"shared": shared, "tensor_core_op": op}
