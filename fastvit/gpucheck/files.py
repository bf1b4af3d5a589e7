"""Result files of ``fastvit gpu-check``: ``<gpu>-<date>-<part>.json`` in the output folder.

Every JSON file uses ``fastvit bench``'s layout (``format`` "fastvit-bench/1",
``records`` with the fields of :data:`fastvit.bench.RECORD_FIELDS`), so
``fastvit compare`` reads any of them (it reports the ``kind == "model"``
records: those are in ``-models.json``); extra material goes under ``details``.
The kernel benchmarks file is pytest-benchmark's JSON, which compare also reads.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

PARTS = ("summary", "env", "tests", "parity", "models", "kernels")
LOG = "gpu-check.log"


def result_path(args, part: str) -> Path:
    if part not in PARTS:
        raise ValueError(f"unknown result part {part!r}; valid: {', '.join(PARTS)}")
    return Path(args.out) / f"{args.stamp}-{part}.json"


def log_path(out: str | Path, stamp: str) -> Path:
    return Path(out) / f"{stamp}-{LOG}"


def write_doc(path: str | Path, records: list[dict], details: dict | None = None) -> Path:
    """Write records (and free-form ``details``) atomically in the bench file layout."""
    from fastvit.bench import ENV_FIELDS, FORMAT

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = dict(
        format=FORMAT, created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), argv=None,
        env={k: records[0].get(k) for k in ENV_FIELDS} if records else {}, records=records, details=details or {},
    )
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    tmp.replace(path)
    return path
