"""Decide once: a layer keeps its measured choice per call slot, and its forward runs it.

An ``auto`` layer owns a :class:`Bindings` table, ``slot -> candidate``, where a
slot is (op, the op's key, device type, mode). Its forward computes the slot
and calls :func:`lookup`: a hit runs the bound candidate (one dict lookup: no
dispatcher, no environment, no import); a miss asks the process-wide
dispatcher once (eagerly: measured, cached or forced) and binds the answer. Off
CUDA the answer is :data:`OFF_CUDA`: the layer runs its plain PyTorch forward.

Inside ``torch.compile``'s trace nothing is measured: a slot bound by an
eager call (:func:`fastvit.dispatch.prepare`, or any earlier call) is read as a
constant of the graph, so the compiled graph calls the measured choice with no
graph break. A slot with no binding runs PyTorch's candidate; on CUDA the
dispatcher records it (``choices()``, source "unprepared") and warns once.

Installing another dispatcher (:func:`~fastvit.dispatch.set_dispatcher`,
:func:`~fastvit.dispatch.using`) or resetting one unbinds every table, so no
layer keeps a choice made under other rules. A copied or unpickled layer starts
with an empty table.
"""

from __future__ import annotations

from .dispatcher import _first_torch, get_dispatcher, in_capture
from .policy import mode_of
from .tables import OFF_CUDA, Bindings, unbind_all

__all__ = ["OFF_CUDA", "Bindings", "lookup", "unbind_all"]


def lookup(table: Bindings, op: str, key: tuple, candidates, args: tuple, probe=None):
    """The candidate bound in ``table`` for this call (binding it first if needed), or :data:`OFF_CUDA`.

    ``args``' first item is a tensor; the slot is (op, key, its device type, :func:`~fastvit.dispatch.mode_of`
    ``args``). ``probe()``, if given, makes the arguments a first call is measured on (instead of ``args``).
    """
    slot = (op, key, args[0].device.type, mode_of(args))
    bound = table.get(slot)
    if bound is None:
        bound = _bind(table, slot, op, key, candidates, args, probe)
    return bound


def _bind(table, slot, op, key, candidates, args, probe):
    if in_capture():
        if not get_dispatcher().on_cuda(args):  # off CUDA there is nothing to prepare: the plain torch path, silently
            return OFF_CUDA
        chosen = _first_torch(candidates)
        _note_unprepared(op, key, slot[3], chosen.name)
        return chosen
    dispatcher = get_dispatcher()
    if dispatcher.on_cuda(args):
        chosen = dispatcher.choose(op, key, candidates, args if probe is None else probe())
    else:
        dispatcher.choose(op, key, candidates, args)  # recorded: PyTorch's, and why
        chosen = OFF_CUDA
    table[slot] = chosen
    return chosen


def _note_unprepared(op: str, key: tuple, mode: str, name: str) -> int:
    """Runs once per trace, outside the graph (dynamo takes its result as a constant): records and warns."""
    get_dispatcher().note_unprepared(op, key, mode, _Named(name))
    return 0


# What torch.compiler.assume_constant_result(fn) sets, set here without importing dynamo (seconds) at import
# time; tests/test_dispatch_binding.py checks the two agree and that no graph break follows.
_note_unprepared._dynamo_marked_constant = True


class _Named:
    """The name and kind of the candidate an unprepared call runs (what the record needs)."""

    def __init__(self, name):
        self.name, self.kind = name, "torch"
