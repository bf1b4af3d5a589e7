"""What each fused op offers, declared once: :class:`OpContract`.

Every op file of :mod:`fastvit.kernels` ends with one declaration,
``CONTRACT = OpContract(...)`` (a tuple when the file offers several ops),
naming the op's public functions, its reference, what it supports, its
ahead-of-time compile cases and its benchmark cases. The compile check
(:mod:`fastvit.kernels.aot`, ``tests/kernels/test_aot.py``), the kernel
benchmarks (``benchmarks/test_kernels.py``), ``fastvit info`` and the layers
read them through :mod:`fastvit.kernels.registry`; no other list of ops is kept.

``supports(**call)`` is the one answer to "can Triton run this call?": None,
or the reason it cannot (device, dtype, widths, head dims, dropout, ...). It
lives in a module that imports no Triton (``*_support.py``), so the layers ask
it before any kernel is imported, and the registry answers "triton is not
installed" where Triton is missing. This module imports no Triton either. The supports run inside ``forward``
(``auto`` asks per call) and under ``torch.compile``: plain checks, no imports
at call time, so they trace without graph breaks.

Naming scheme, the same in every op file:

- Triton kernels: ``_<op>_<pass>_kernel``, pass ``fwd``, ``bwd`` or a part of
  the backward (``bwd_dq``, ``bwd_dkdv``, ``bwd_delta``, ``bwd_short``); an
  autotuned kernel keeps the name, its raw ``@triton.jit`` function is ``.fn``.
- Launchers (plain Python that allocates outputs, picks the grid and launches):
  ``<op>_<pass>``, e.g. ``attention_fwd``, ``layer_norm_bwd``.
- torch.library ops: ``fastvit::<op>_<pass>``, their Python handles
  ``<op>_<pass>_op``, e.g. ``fastvit::attention_qkvpacked_fwd`` /
  ``attention_qkvpacked_fwd_op``.
- Tuning tables: ``<PASS>_CONFIGS`` (per architecture, :mod:`fastvit.kernels.tuning`),
  gathered per op file as ``CONFIGS = {"<pass>": table}``.
- Public functions: ``<op>`` or ``<op>_<variant>`` (``attention_qkvpacked``,
  ``linear_gelu_tma``).
- References: ``<op>_ref`` in :mod:`fastvit.kernels.reference`, the single
  plain-PyTorch definition of the op (a variant such as ``linear_gelu_tma``
  shares its op's ``linear_gelu_ref``), used by the tests, the benchmarks'
  parity figures and the eager layers alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from fastvit.kernels import tuning

REFERENCE_MODULE = "fastvit.kernels.reference"
_INTERPRETER_HINT = "TRITON_INTERPRET=1 runs the kernels on the CPU"


@dataclass(frozen=True)
class BenchCase:
    """One case of ``benchmarks/test_kernels.py``: ``test_<bench>[<id>]`` with ``params``.

    ``params`` are the benchmark function's arguments, in order; a case marked
    ``slow`` runs only with ``-m slow``. Providers name the implementation
    timed: fastvit's kernel and PyTorch's baseline ("torch", "sdpa-*", ...).
    """

    op: str
    bench: str
    id: str
    params: tuple[tuple[str, object], ...]
    slow: bool = False

    @property
    def values(self) -> dict:
        return dict(self.params)

    @property
    def test_id(self) -> str:
        """The pytest node name: ``test_<bench>[<id>]``."""
        return f"test_{self.bench}[{self.id}]"

    def __str__(self) -> str:
        return self.id


def bench_case(op: str, bench: str, id: str, /, *, slow: bool = False, **params) -> BenchCase:
    """A :class:`BenchCase` of contract ``op``; ``params`` in the benchmark function's order."""
    return BenchCase(op, bench, id, tuple(params.items()), slow)


@dataclass(frozen=True)
class OpContract:
    """The declaration of one fused op (see the module docstring).

    - ``name``: the op, e.g. "attention"; ``functions``: its public functions,
      names in ``module`` (the op file).
    - ``reference``: ``<name>_ref`` of :mod:`fastvit.kernels.reference`.
    - ``supports(**call) -> str | None``: None or why Triton cannot take a call
      described by keywords (``device``, ``dtype``, widths, ...).
    - ``aot_cases()``: the :class:`~fastvit.kernels.aot.AotCase` list of the
      op's kernels; ``bench_cases()``: its :class:`BenchCase` list.
    - ``description``: one line of what it supports, for ``fastvit info``.
    """

    name: str
    module: str
    functions: tuple[str, ...]
    reference: Callable
    supports: Callable[..., str | None]
    aot_cases: Callable[[], list]
    bench_cases: Callable[[], list]
    description: str

    def __post_init__(self):
        if not (isinstance(self.name, str) and self.name.isidentifier()):
            raise ValueError(f"OpContract: name must be an identifier, got {self.name!r}")
        if not self.functions or any(not (isinstance(f, str) and f.startswith(self.name)) for f in self.functions):
            raise ValueError(
                f"OpContract {self.name!r}: functions must be '{self.name}' or '{self.name}_<variant>', "
                f"got {self.functions!r}"
            )
        ref_name = str(getattr(self.reference, "__name__", ""))
        base = ref_name.removesuffix("_ref")
        if (
            not ref_name.endswith("_ref")
            or not (self.name == base or self.name.startswith(base + "_"))
            or getattr(self.reference, "__module__", None) != REFERENCE_MODULE
        ):
            raise ValueError(
                f"OpContract {self.name!r}: reference must be {REFERENCE_MODULE}.<op>_ref of this op or of the op "
                f"it is a variant of, got {getattr(self.reference, '__module__', '?')}.{ref_name or self.reference!r}"
            )
        for attr in ("supports", "aot_cases", "bench_cases"):
            if not callable(getattr(self, attr)):
                raise TypeError(f"OpContract {self.name!r}: {attr} must be callable")
        if not isinstance(self.description, str) or not self.description:
            raise ValueError(f"OpContract {self.name!r}: description must be a non-empty string")

    def describe(self) -> str:
        return f"{self.name}: {self.description} [{', '.join(self.functions)}]"


def declare(op: str, module: str, functions: tuple[str, ...], description: str, support) -> OpContract:
    """The :class:`OpContract` of ``op`` assembled by the naming scheme: the reference
    :mod:`fastvit.kernels.reference`.``<op>_ref`` and, from the Triton-free ``support``
    module, ``supports_<op>``, ``<op>_aot_cases`` and ``<op>_bench_cases``."""
    import importlib

    from fastvit.kernels import reference

    if isinstance(support, str):
        support = importlib.import_module(support)
    parts = {}
    for attr, name in (("supports", f"supports_{op}"), ("aot_cases", f"{op}_aot_cases"),
                       ("bench_cases", f"{op}_bench_cases")):  # fmt: skip
        if not hasattr(support, name):
            raise ValueError(f"OpContract {op!r}: {support.__name__} has no {name}")
        parts[attr] = getattr(support, name)
    base = op  # a variant (linear_gelu_tma) computes what its op does: linear_gelu_ref
    while not hasattr(reference, f"{base}_ref") and "_" in base:
        base = base.rpartition("_")[0]
    if not hasattr(reference, f"{base}_ref"):
        raise ValueError(f"OpContract {op!r}: {REFERENCE_MODULE} has no {op}_ref")
    return OpContract(name=op, module=module, functions=tuple(functions), reference=getattr(reference, f"{base}_ref"),
                      description=description, **parts)  # fmt: skip


# -- shared parts of every supports() -------------------------------------------------------


def _device_type(device) -> str:
    if isinstance(device, torch.device):
        return device.type
    if isinstance(device, str):
        return torch.device(device).type
    raise TypeError(f"device must be a str or torch.device, got {type(device).__name__}")


def device_reason(device, interpret: bool | None = None) -> str | None:
    """None for CUDA, or for any device when the interpreter runs the kernels
    (``interpret``; default: whether TRITON_INTERPRET=1 is set)."""
    kind = _device_type(device)
    if kind == "cuda":
        return None
    hint = ""
    if interpret is None:
        interpret, hint = tuning.interpreting(), f"; {_INTERPRETER_HINT}"
    return None if interpret else f"tensors are on {kind}; the kernels run on CUDA{hint}"


def dtype_reason(name: str, dtype, allowed) -> str | None:
    """None when ``dtype`` is one of ``allowed`` (torch dtypes), else the reason."""
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"{name} must be a torch.dtype, got {type(dtype).__name__}")
    if dtype in allowed:
        return None
    names = ", ".join(str(d).replace("torch.", "") for d in allowed)
    return f"{name} {str(dtype).replace('torch.', '')} is not one of {names}"


def size_reason(name: str, value, low: int, high: int | None = None) -> str | None:
    """None when the integer ``value`` is in ``low..high``; a bool or non-int raises TypeError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        return f"{name} {value} is not {bound}"
    return None


def first_reason(*reasons: str | None) -> str | None:
    for reason in reasons:
        if reason is not None:
            return reason
    return None
