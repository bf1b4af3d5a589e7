"""Reading checkpoint files into a flat {name: tensor} dict, whatever the format.

.safetensors (needs the ``safetensors`` package), .pth / .pt / .bin / .ckpt
(``torch.load(weights_only=True)``: tensors and plain containers only, never
arbitrary pickled objects), .npz (numpy), or a directory holding a Hugging Face
``model.safetensors`` / ``pytorch_model.bin``. Every failure names the file.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from .tensors import check_entries

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
SUFFIXES = (".safetensors", *TORCH_SUFFIXES, ".npz")
_NESTED = ("model", "state_dict", "model_state", "model_state_dict")
# Wrappers that prefix every key: DistributedDataParallel, torch.compile, Lightning modules.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")
_HF_FILES = ("model.safetensors", "pytorch_model.bin")
MAX_NESTING = 8  # {"state_dict": {"model": ...}} levels opened before giving up


class CheckpointFileError(ValueError):
    """A readable file whose content is not a checkpoint fastvit can take."""


def _resolve(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if not path.is_dir():
        return path
    for name in _HF_FILES:
        if (path / name).is_file():
            return path / name
    sharded = sorted(p.name for p in path.glob("*.index.json"))
    hint = f" (sharded checkpoints such as {sharded[0]} are not supported; merge the shards first)" if sharded else ""
    raise FileNotFoundError(f"{path} is a directory without {' or '.join(_HF_FILES)}{hint}")


def _read_safetensors(path: Path) -> dict:
    try:
        from safetensors.torch import load_file
    except ImportError as e:
        raise ImportError(f"reading {path} needs the safetensors package: pip install safetensors") from e
    return load_file(str(path), device="cpu")


def _weights_only_reason(e: Exception) -> str:
    m = re.search(r"WeightsUnpickler error: ([^\n]*)", str(e))
    return m.group(1).strip() if m else str(e).splitlines()[0]


def _read_torch(path: Path) -> dict:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" not in str(e).lower():
            raise  # a damaged pickle, reported as such by read_checkpoint
        raise CheckpointFileError(
            f"{path} holds pickled Python objects besides tensors (a whole nn.Module, an argparse "
            "Namespace, ...). fastvit reads .pth files with torch.load(weights_only=True), which refuses "
            "them because unpickling can run code. If you trust the file: "
            "obj = torch.load(path, weights_only=False), then pass its state dict "
            "(obj.state_dict() or obj['state_dict']) to fastvit.load_checkpoint(model, state_dict). "
            f"torch said: {_weights_only_reason(e)}"
        ) from e
    if not isinstance(obj, dict):
        raise CheckpointFileError(f"{path} holds a {type(obj).__name__}, expected a dict of tensors (a state dict)")
    return obj


def _read_npz(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as f:
        try:
            arrays = {k: f[k] for k in f.files}
        except ValueError as e:
            if "allow_pickle" not in str(e):
                raise
            raise CheckpointFileError(f"{path} holds object arrays (pickled Python objects), which fastvit "
                                      "does not unpickle; save the weights as float arrays") from e
    bad = [k for k, a in arrays.items() if a.dtype.kind != "f"]
    if bad:
        dtype = arrays[bad[0]].dtype
        hint = " (bfloat16 saved as raw bytes? convert it to float32 first)" if dtype.kind == "V" else ""
        raise CheckpointFileError(f"{path}: expected float arrays, found {dtype} in {bad[0]!r}{hint}")
    return {k: torch.from_numpy(np.ascontiguousarray(a)) for k, a in arrays.items()}


def unwrap(obj: dict, source: str) -> dict:
    """The tensors of a checkpoint dict: nested training checkpoints are opened (at most
    :data:`MAX_NESTING` levels, each dict once, so a self-referential one cannot loop), a
    common wrapper prefix (``module.``, ``_orig_mod.``, ``model.``) is removed."""
    seen = set()
    while not any(isinstance(v, torch.Tensor) for v in obj.values()):
        seen.add(id(obj))
        inner = next((obj[k] for k in _NESTED if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            raise CheckpointFileError(f"{source}: no tensors at the top level and none of the usual nested "
                                      f"state dicts {list(_NESTED)}; found keys {list(obj)[:8]}")
        if id(inner) in seen or len(seen) >= MAX_NESTING:
            why = "refers to itself" if id(inner) in seen else f"nests state dicts more than {MAX_NESTING} levels deep"
            raise CheckpointFileError(f"{source}: the checkpoint {why} (keys {list(_NESTED)}) without reaching tensors")
        obj = inner
    obj = dict(obj)
    check_entries(obj, source, floating=False)
    keys = list(obj)
    for prefix in _WRAPPER_PREFIXES:
        while keys and all(k.startswith(prefix) for k in keys):
            keys = [k[len(prefix):] for k in keys]
    return dict(zip(keys, obj.values()))


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint file, on the CPU, under the names the file uses.

    Raises ``FileNotFoundError`` (no such file), ``ImportError`` (safetensors missing)
    or ``ValueError`` (unknown suffix, truncated or corrupt file, non-tensor content).
    """
    path = _resolve(Path(path))
    suffix = path.suffix.lower()
    readers = {".safetensors": _read_safetensors, ".npz": _read_npz, **{s: _read_torch for s in TORCH_SUFFIXES}}
    if suffix not in readers:
        raise ValueError(f"{path}: unknown checkpoint suffix {suffix!r}; expected one of {', '.join(SUFFIXES)}")
    try:
        obj = readers[suffix](path)
    except (ImportError, CheckpointFileError):
        raise
    except Exception as e:  # each library reports a damaged file its own way
        raise ValueError(f"{path}: could not read it as a {suffix} checkpoint; the file is truncated or corrupt "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
    return unwrap(obj, str(path))
