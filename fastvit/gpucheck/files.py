"""Result files of ``fastvit gpu-check``: ``<gpu>-<date>-<part>`` in the output folder.

Eight files at most (what a GPU session can bring back):

- ``env.json``: the environment, written first (before torch is imported) and
  completed when the step ends;
- ``parity.jsonl``, ``models.jsonl``, ``kernels.jsonl``, ``tests.jsonl``,
  ``sweep.jsonl``: one JSON object per line, appended and flushed as each case
  finishes, so a step cut off keeps every case it finished. Lines with a
  ``gpu_check`` key are the step's own bookkeeping (``plan``: how many cases
  it means to run; ``end``: its status); every other line is a record with the
  fields of :data:`fastvit.bench.RECORD_FIELDS`;
- ``summary.json``: every step's status and every record, failures first, in
  ``fastvit bench``'s layout, so ``fastvit compare`` reads it (it takes the
  ``kind == "model"`` records); rebuilt from the streams by the parent;
- ``gpu-check.log``: every step's output as it is printed.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path

STREAMS = ("parity", "models", "kernels", "tests", "sweep")
PARTS = ("summary", "env", *STREAMS)
LOG = "gpu-check.log"
BAD = ("failed", "error")


def result_path(args, part: str) -> Path:
    """``<out>/<stamp>-<part>.json`` (``.jsonl`` for a step's stream)."""
    if part not in PARTS:
        raise ValueError(f"unknown result part {part!r}; valid: {', '.join(PARTS)}")
    return Path(args.out) / f"{args.stamp}-{part}.{'jsonl' if part in STREAMS else 'json'}"


def log_path(out: str | Path, stamp: str) -> Path:
    return Path(out) / f"{stamp}-{LOG}"


def write_doc(path: str | Path, records: list[dict], details: dict | None = None) -> Path:
    """Write records (and free-form ``details``) atomically in the bench file layout."""
    from fastvit.bench import ENV_FIELDS, FORMAT

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    env = next((r for r in records if r.get("kind") != "step"), records[0] if records else {})
    doc = dict(
        format=FORMAT, created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), argv=None,
        env={k: env.get(k) for k in ENV_FIELDS}, records=records, details=details or {},
    )
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    tmp.replace(path)
    return path


class Stream:
    """Appends one JSON object per line to a step's ``.jsonl`` file, flushed and synced line by line."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.records = 0

    def _append(self, obj: dict) -> None:
        line = json.dumps(obj, default=str)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def record(self, record: dict) -> dict:
        self._append(record)
        self.records += 1
        return record

    def plan(self, planned: int | None, **details) -> None:
        """How many cases the step means to run (None: not known yet; the total then reads "?")."""
        self._append(dict(gpu_check="plan", planned=None if planned is None else int(planned), **details))

    def end(self, status: str, reason: str | None = None, **details) -> None:
        self._append(dict(gpu_check="end", status=status, reason=reason, **details))


def read_stream(path: str | Path) -> dict:
    """A step's stream: ``records``, ``planned`` (sum of its plan lines; None without one or when one says
    None: not known), ``end`` (its end line
    or None) and ``torn`` (a last line cut mid-write, ignored)."""
    records, planned, end, torn, unknown = [], None, None, False, False
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError:
        lines = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            torn = torn or i == len(lines) - 1
            continue
        if not isinstance(obj, dict):
            continue
        tag = obj.get("gpu_check")
        if tag == "plan":
            if obj.get("planned") is None:
                unknown = True
            else:
                planned = (planned or 0) + int(obj["planned"])
        elif tag == "end":
            end = obj
        elif tag is None:
            records.append(obj)
    return dict(records=records, planned=None if unknown else planned, end=end, torn=torn)
