"""The on-disk record of measured choices.

One JSON file per software environment in the user cache dir
(``$FASTVIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/fastvit``, else
``~/.cache/fastvit``), named by a hash of the torch/triton/fastvit versions
and holding those versions, so a file written by other versions is never
used. Each entry is keyed by op, GPU name and the op's key. Writes go to a
temporary file in the same folder, then ``os.replace`` (readers never see a
half-written file); a file that cannot be read or parsed is ignored with a
warning, and a folder that cannot be written only warns: nothing here raises
into a forward pass.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path

FORMAT = "fastvit-dispatch/1"


class DispatchCacheWarning(UserWarning, RuntimeWarning):
    """The disk cache could not be read or written: nothing fails, the choice is measured (again)."""

ENV_CACHE_DIR = "FASTVIT_CACHE_DIR"


def cache_dir() -> Path:
    """Where the dispatch cache lives (see the module docstring)."""
    if os.environ.get(ENV_CACHE_DIR):
        return Path(os.environ[ENV_CACHE_DIR]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "fastvit"
    return Path.home() / ".cache" / "fastvit"


def _distribution_version(package: str) -> str:
    """A package's version without importing it (triton stays unimported unless something else imported it)."""
    from importlib.metadata import PackageNotFoundError, version

    module = sys.modules.get(package)
    if getattr(module, "__version__", None):
        return str(module.__version__)
    try:
        return version(package)
    except PackageNotFoundError:
        return "none"


def software_versions() -> dict[str, str]:
    """The versions a measured choice depends on: torch, triton, fastvit (and CUDA's)."""
    import torch

    fastvit = sys.modules["fastvit"]  # loaded before any of its subpackages; no import back into the package
    return dict(torch=torch.__version__, cuda=str(torch.version.cuda), triton=_distribution_version("triton"),
                fastvit=fastvit.__version__)


def entry_key(op: str, device: str, key: tuple, mode: str = "inference") -> str:
    """The string an entry is stored under: op, GPU name, the op's key, the mode (inference | training)."""
    return json.dumps([op, device, list(key), mode], separators=(",", ":"))


class DiskCache:
    """Entries ``entry_key -> {"chosen", "times", "reasons", "errors"}`` for one set of versions."""

    def __init__(self, folder: str | os.PathLike | None, versions: dict[str, str]):
        self.folder = None if folder is None else Path(folder)
        self.versions = dict(versions)
        digest = hashlib.sha1(json.dumps(self.versions, sort_keys=True).encode()).hexdigest()[:16]
        self.name = f"dispatch-{digest}.json"
        self._entries: dict[str, dict] | None = None
        self._warned_write = False

    @property
    def path(self) -> Path | None:
        return None if self.folder is None else self.folder / self.name

    def entries(self) -> dict[str, dict]:
        if self._entries is None:
            self._entries = self._read()
        return self._entries

    def get(self, op: str, device: str, key: tuple, mode: str = "inference") -> dict | None:
        return self.entries().get(entry_key(op, device, key, mode))

    def _read(self) -> dict[str, dict]:
        path = self.path
        if path is None or not path.exists():
            return {}
        try:
            doc = json.loads(path.read_text())
            if not isinstance(doc, dict) or doc.get("format") != FORMAT:
                raise ValueError(f"not a {FORMAT} file")
            if doc.get("versions") != self.versions:
                return {}  # written by other versions (a hash collision, or edited): not ours
            entries = doc.get("entries")
            if not isinstance(entries, dict):
                raise ValueError("'entries' is not an object")
            return {k: v for k, v in entries.items() if isinstance(v, dict) and isinstance(v.get("chosen"), str)}
        except Exception as e:  # noqa: BLE001 - whatever is wrong with the file, it is not used
            warnings.warn(f"fastvit.dispatch: ignoring the unreadable cache file {path}: {e}", DispatchCacheWarning, stacklevel=2)
            return {}

    def put(self, op: str, device: str, key: tuple, mode: str, entry: dict) -> None:
        """Store one entry and rewrite the file (merged with what other processes wrote since)."""
        self.entries()[entry_key(op, device, key, mode)] = entry
        path = self.path
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            merged = {**self._read_quietly(), **self.entries()}
            doc = dict(format=FORMAT, versions=self.versions, entries=merged)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.name}.", suffix=".tmp", dir=path.parent)
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump(doc, f, indent=1, sort_keys=True)
                os.replace(tmp, path)
            except BaseException:
                os.unlink(tmp)
                raise
        except Exception as e:  # noqa: BLE001 - a cache that cannot be written only costs the next process a measurement
            if not self._warned_write:
                self._warned_write = True
                warnings.warn(f"fastvit.dispatch: cannot write the cache file {path}: {e}", DispatchCacheWarning, stacklevel=2)

    def _read_quietly(self) -> dict[str, dict]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self._read()
