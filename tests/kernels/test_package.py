"""fastvit.kernels: lazy, and its public names stay the ops once their modules are loaded."""

import importlib

import pytest

import fastvit.kernels as kernels
from fastvit.kernels.tuning import arch_of


@pytest.mark.parametrize("name", kernels.__all__)
def test_public_names_are_the_ops_after_their_modules_load(name):
    importlib.import_module(f"fastvit.kernels.{kernels._OPS[name]}")
    op = getattr(kernels, name)
    assert callable(op) and op.__name__ == name, f"fastvit.kernels.{name} is {op!r}"


@pytest.mark.parametrize("capability,table", [((8, 0), "sm80"), ((8, 9), "sm80"), ((9, 0), "sm90"), ((10, 0), "sm90"), ((12, 0), "default"), ((7, 5), "default"), (None, "default")])
def test_arch_tables(capability, table):
    assert arch_of(capability) == table
