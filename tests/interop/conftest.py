"""Interop tests: fastvit side by side with real timm, torchvision and transformers.

Every test here is marked ``interop``; the normal run deselects them (pyproject's
``-m "not slow and not interop"``), and ``bash scripts/test_interop.sh`` runs them
in ``.venv-interop``, where timm and torchvision import. There they never skip:
the fixtures import the libraries outright, so a missing one is an error.
Test modules import timm / torchvision only through these fixtures, so collecting
them in the normal environment (where torchvision does not import) is harmless.
"""

import importlib
import os

import pytest
import torch

HERE = os.path.dirname(__file__)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if str(item.fspath).startswith(HERE):
            item.add_marker(pytest.mark.interop)


@pytest.fixture(scope="session")
def timm():
    return importlib.import_module("timm")


@pytest.fixture(scope="session")
def torchvision():
    return importlib.import_module("torchvision")


@pytest.fixture(scope="session")
def transformers():
    return importlib.import_module("transformers")
