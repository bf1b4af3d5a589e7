"""The repository itself: no compiled artefacts committed, docs that agree with themselves."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTEFACTS = (".o", ".so", ".a", ".cubin", ".fatbin", ".ptx", ".hsaco", ".elf")
_NUMBERS = {"five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9}


def _git(*args) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)


needs_git = pytest.mark.skipif(shutil.which("git") is None or _git("rev-parse").returncode != 0,
                               reason="not a git checkout")


@needs_git
def test_no_compiled_artefacts_tracked():
    tracked = _git("ls-files").stdout.splitlines()
    found = [f for f in tracked if f.lower().endswith(ARTEFACTS)]
    assert not found, f"compiled artefacts committed: {found}"
    elf = [f for f in tracked if (ROOT / f).is_file() and (ROOT / f).open("rb").read(4) == b"\x7fELF"]
    assert not elf, f"ELF binaries committed: {elf}"


@needs_git
@pytest.mark.parametrize("suffix", ARTEFACTS)
def test_compiled_artefacts_are_ignored(suffix):
    name = f"kernel{suffix}"
    assert _git("check-ignore", "-q", "--no-index", name).returncode == 0, f"{name} is not ignored by .gitignore"


def test_readme_counts_the_fused_block_launches():
    text = (ROOT / "docs" / "kernels.md").read_text()
    section = text.split("## What the fused block runs", 1)[1].split("\n## ", 1)[0]
    m = re.search(r"pre-norm block is (\w+) kernel", section)
    assert m, "docs/kernels.md no longer states how many kernels the fused block runs"
    items = re.findall(r"^(\d+)\. (.*(?:\n   .*)*)", section, flags=re.M)
    assert [n for n, _ in items] == [str(i) for i in range(1, len(items) + 1)]
    for n, item in items:  # one launch per item, so the items count the launches
        kinds = {k for k in ("LayerNorm", "GEMM", "attention") if k in item}
        assert len(kinds) == 1, f"item {n} describes {sorted(kinds)}: {item!r}"
    assert _NUMBERS.get(m.group(1), m.group(1)) == len(items), (m.group(1), len(items))


def test_pyproject_cites_only_existing_paths():
    text = (ROOT / "pyproject.toml").read_text()
    cited = re.findall(r"(?:see|in) ((?:docs|scripts|benchmarks)/[\w./-]+)", text)
    missing = [c for c in cited if not (ROOT / c).exists()]
    assert not missing, f"pyproject.toml cites missing paths: {missing}"
    assert "docs/NOTES" not in text or (ROOT / "docs" / "NOTES.md").exists()
