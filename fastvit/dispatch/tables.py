"""The tables ``auto`` layers bind their choices in, and the switch that empties them all.

Kept apart from the dispatcher and the binding logic so both can import it:
installing or resetting a dispatcher unbinds every table (:func:`unbind_all`).
"""

from __future__ import annotations

import weakref

# every live table, so a new dispatcher can unbind them all (weak: a table dies with its layer)
_TABLES: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


class _OffCuda:
    """The binding of a call off CUDA: the layer runs its plain PyTorch forward."""

    name = "torch"
    kind = "torch"

    def __repr__(self):
        return "OFF_CUDA"

    def __reduce__(self):
        return "OFF_CUDA"


OFF_CUDA = _OffCuda()


class Bindings(dict):
    """A layer's bound choices: ``(op, key, device type, mode) -> Candidate`` (or :data:`OFF_CUDA`)."""

    __slots__ = ("__weakref__",)

    def __init__(self):
        super().__init__()
        _TABLES[id(self)] = self

    def __reduce__(self):  # copies and pickles start empty: the choice is made again, for the copy's device
        return (Bindings, ())


def unbind_all() -> None:
    """Forget every layer's bound choices (their next eager call chooses again)."""
    for table in list(_TABLES.values()):
        table.clear()
