"""The compile check: ahead-of-time compilation for GPUs that are not present.

A tool outside the kernel layer (it reads the kernels and the preset-derived shape table,
:mod:`fastvit.shapes`; the kernels import nothing of it). This module is the machinery;
:mod:`.norm`, :mod:`.attention` and :mod:`.linear` build each op's cases from its launch
rules, and :mod:`.cases` lists them per op.

Triton can compile a kernel for any CUDA target on a machine without a GPU.
:mod:`fastvit.aot.cases` lists, per op, one :class:`AotCase` per shipped
configuration; :func:`check_cases` compiles the named ones of
:func:`fastvit.aot.cases.all_cases` in child processes; :func:`compile_case`
compiles one and :func:`check_case` asserts that it fits the architecture's shared
memory and that its matrix products use the tensor cores (``mma`` on sm_80,
``wgmma`` on sm_90).
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Usable shared memory per block, bytes (A100: 164 KB, H100: 228 KB minus 1 KB reserved).
SHARED_MEMORY_LIMIT = {80: 163 * 1024, 90: 227 * 1024}
CAPABILITY = {"sm80": 80, "sm90": 90}
# Instruction that proves the tensor cores are used, per target.
TENSOR_CORE_OP = {80: "mma.sync", 90: "wgmma.mma_async"}
# Bytes of stack / local memory (register spills) a kernel may use; see check_case.
SPILL_TOLERANCE = 16


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
    # Arguments compiled as divisible by 16, as Triton specializes them at launch
    # for aligned tensors and strides (128-bit loads). None: every pointer argument.
    # :func:`divisible_args` derives them from a launch's argument values.
    divisible: tuple[str, ...] | None = None
    # Substrings the PTX must contain (e.g. "ld.global.v4" for vector loads,
    # "cp.async" for pipelined copies, "cp.async.bulk.tensor" for TMA,
    # "wgmma.mma_async"), checked by check_case beside the tensor-core op.
    expect_ptx: tuple[str, ...] = ()
    # Substrings the PTX must not contain (e.g. "ld.global.b16": scalar 16-bit loads).
    forbid_ptx: tuple[str, ...] = ()
    # "core" cases compile in the default test run; "wide" ones only with -m slow.
    tier: str = "core"

    @property
    def capability(self) -> int:
        return CAPABILITY[self.arch]

    def expected_op(self) -> str | None:
        if self.tensor_core_op == "auto":
            return TENSOR_CORE_OP[self.capability]
        return self.tensor_core_op

    def __str__(self) -> str:  # readable pytest ids
        return f"{self.name}-{self.arch}-w{self.num_warps}s{self.num_stages}"


def divisible_args(signature: dict, values: dict) -> tuple[str, ...]:
    """Arguments Triton marks divisible by 16 when launched with ``values``.

    Pointers are assumed 16-byte aligned (every fresh torch allocation is); an
    integer argument is marked when its value divides by 16, as Triton's launch
    specialization does. Integers missing from ``values`` (e.g. a row count
    that depends on the batch) are left unmarked: the compiled code is then
    valid for any value.
    """
    names = []
    for name, kind in signature.items():
        if kind.startswith("*"):
            names.append(name)
        elif kind in ("i32", "i64") and isinstance(values.get(name), int) and values[name] % 16 == 0:
            names.append(name)
    return tuple(names)


def compile_case(case: AotCase):
    import triton
    from triton.backends.compiler import GPUTarget

    names = case.divisible
    if names is None:
        names = tuple(n for n, t in case.signature.items() if t.startswith("*"))
    attrs = {(case.fn.arg_names.index(n),): [["tt.divisibility", 16]] for n in names}
    src = triton.compiler.ASTSource(fn=case.fn, signature=case.signature, constexprs=case.constexprs, attrs=attrs)
    target = GPUTarget("cuda", case.capability, 32)
    return triton.compile(src, target=target, options={"num_warps": case.num_warps, "num_stages": case.num_stages})


def resource_usage(cubin: bytes) -> dict | None:
    """Registers per thread and local-memory bytes (register spills) of a compiled
    kernel, read with the ``cuobjdump`` that ships with Triton; None without it."""
    import os
    import re
    import subprocess
    import tempfile

    import triton

    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    if not os.path.exists(tool):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.cubin")
        with open(path, "wb") as f:
            f.write(cubin)
        out = subprocess.run([tool, "-res-usage", path], capture_output=True, text=True, check=True).stdout
    found = re.search(r"REG:(\d+) STACK:(\d+) .*LOCAL:(\d+)", out)
    if found is None:
        raise RuntimeError(f"cannot read the resource usage from cuobjdump's output:\n{out}")
    regs, stack, local = map(int, found.groups())
    return {"registers": regs, "stack": stack, "local": local}


def check_case(case: AotCase) -> dict:
    """Compile and verify; returns a small report (shared bytes, tensor-core op
    found, registers and spill bytes where cuobjdump is available).

    Spilling registers is a failure: a kernel that spills in its main loop
    compiles and passes its parity tests but runs far below its speed. Up to
    SPILL_TOLERANCE bytes pass: triton 3.6 keeps one 64-bit value of two
    kernels on the stack outside the loop (16 B stored, 8 B loaded once).
    """
    compiled = compile_case(case)
    ptx = compiled.asm["ptx"]
    shared = compiled.metadata.shared
    limit = SHARED_MEMORY_LIMIT[case.capability]
    if shared > limit:
        raise AssertionError(f"{case}: uses {shared} B of shared memory, {case.arch} allows {limit} B")
    op = case.expected_op()
    if op is not None and op not in ptx:
        raise AssertionError(f"{case}: expected tensor-core instruction {op!r} in the PTX, found none")
    missing = [text for text in case.expect_ptx if text not in ptx]
    if missing:
        raise AssertionError(f"{case}: expected {missing} in the PTX, found none")
    present = [text for text in case.forbid_ptx if text in ptx]
    if present:
        raise AssertionError(f"{case}: {[(t, ptx.count(t)) for t in present]} in the PTX, expected none")
    usage = resource_usage(compiled.asm["cubin"])
    if usage is not None and max(usage["local"], usage["stack"]) > SPILL_TOLERANCE:
        raise AssertionError(
            f"{case}: spills registers ({usage['local']} B local memory, {usage['stack']} B stack, "
            f"{usage['registers']} registers per thread)"
        )
    found = {text: ptx.count(text) for text in case.expect_ptx}
    return {"shared": shared, "tensor_core_op": op, "usage": usage, "expect_ptx": found}


_CHILD = """
import json, sys
from fastvit.aot import check_case
from fastvit.aot.cases import all_cases
wanted = set(json.loads(sys.argv[1]))
reports = {}
for case in all_cases():
    if str(case) in wanted:
        try:
            reports[str(case)] = check_case(case)
        except Exception as e:  # reported per case by the caller
            reports[str(case)] = {"error": f"{type(e).__name__}: {e}"}
print(json.dumps(reports))
"""


def check_cases(names: list[str], workers: int | None = None) -> dict[str, dict]:
    """Compile the named cases of :func:`fastvit.aot.cases.all_cases` in child processes.

    Children run without ``TRITON_INTERPRET``: a process that has loaded the
    interpreter cannot compile for a GPU. Returns ``str(case) -> report``, where
    a failed case's report holds ``"error"``; a name no op declares raises
    ValueError.
    """
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise TypeError(f"check_cases: names must be a list of case names (str), got {names!r:.200}")
    if not names:
        return {}
    import json
    import os
    import subprocess
    import sys

    workers = max(1, min(workers or os.cpu_count() or 1, len(names)))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    children = [
        subprocess.Popen([sys.executable, "-c", _CHILD, json.dumps(names[i::workers])],
                         env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for i in range(workers)
    ]
    reports = {}
    for child in children:
        out, err = child.communicate()
        if child.returncode != 0:
            raise RuntimeError(f"AOT compile child failed:\n{err[-4000:]}")
        reports.update(json.loads(out.strip().splitlines()[-1]))
    unknown = sorted(set(names) - set(reports))
    if unknown:
        raise ValueError(f"check_cases: no op declares the cases {unknown[:5]}{'...' if len(unknown) > 5 else ''}")
    return reports
