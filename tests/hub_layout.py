"""A Hugging Face Hub cache laid out as huggingface_hub lays it out, for offline tests:
``<cache>/models--<org>--<name>/refs/main`` holds a commit hash and
``snapshots/<commit>/<file>`` the files (plain copies; huggingface_hub reads them as it reads
its symlinks into ``blobs/``)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path


def add_repo(cache, repo_id: str, files: dict, revision: str = "main") -> Path:
    """Put ``files`` ({name in the repo: local path}) into ``cache`` as repo ``repo_id`` at ``revision``;
    returns the snapshot folder."""
    org, name = repo_id.split("/")
    repo = Path(cache) / f"models--{org}--{name}"
    commit = hashlib.sha1(f"{repo_id}@{revision}:{sorted(files)}".encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    for target, source in files.items():
        shutil.copyfile(source, snapshot / target)
    return snapshot


def use_cache(monkeypatch, cache) -> None:
    """Point huggingface_hub at ``cache``, offline, for this test (environment and the constants it
    read at import)."""
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(Path(cache).parent / "hf_home"))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
