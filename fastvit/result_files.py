"""Reading result files for ``fastvit compare``: the layouts accepted and the fields each record must have.

:func:`read_records` accepts a ``fastvit bench`` / gpu-check file, a
pytest-benchmark ``--benchmark-json`` file, one record object, or JSON lines
(one object per line: records, pytest-benchmark entries or whole documents;
header objects are skipped). Model and kernel records are checked field by
field (:func:`record_problem`, :func:`kernel_problem`); records of other kinds
pass through unchecked, to be counted and named as not shown.
docs/benchmarks.md lists the fields read.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

SHOWN_KINDS = ("model", "kernel")


def load_records(path: str | Path) -> list[dict]:
    """Model records from a result file (see :func:`read_records` for the formats)."""
    return [r for r in read_records(path) if r.get("kind") == "model"]


def read_records(path: str | Path) -> list[dict]:
    """Every record of a result file, its model and kernel records checked.

    Formats: a ``fastvit bench`` file (``{"format": "fastvit-bench/1", "records": [...]}``,
    also every gpu-check file), a pytest-benchmark ``--benchmark-json`` file
    (records in ``benchmarks[].extra_info``), one record object, or JSON lines:
    one object per line, each a record (it has ``kind``), a pytest-benchmark
    entry (``extra_info``) or a whole document of the kinds above; other
    objects (headers) are skipped. ``ValueError`` naming the file for anything
    that is not one: unreadable, not JSON, or records lacking fields or
    holding values of the wrong kind.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ValueError(f"{path}: cannot read ({e.strerror or e})") from e
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start})") from e
    try:
        docs, lines = [json.loads(text)], False
    except json.JSONDecodeError as e:
        docs, lines = _json_lines(path, text, e), True
    except RecursionError as e:
        raise ValueError(f"{path}: JSON nested too deeply to be a result file") from e
    records: list[dict] = []
    recognized = False
    for n, doc in enumerate(docs, 1):
        if lines and not isinstance(doc, dict):
            raise ValueError(f"{path}: line {n} is not a JSON object")
        found = _doc_records(path, doc, f"line {n}: " if lines else "")
        recognized = recognized or found is not None
        records.extend(found or [])  # (a JSON-lines header is skipped)
    if not recognized:
        if lines:
            raise ValueError(f"{path}: JSON lines, but no line is a record, a pytest-benchmark entry or a result document")
        raise ValueError(f"{path}: neither a fastvit bench result file nor a pytest-benchmark JSON file")
    checked = []
    counts: dict[str, int] = {}
    for r in records:
        kind = r.get("kind")
        if kind in SHOWN_KINDS:
            i = counts[kind] = counts.get(kind, 0) + 1
            problem = record_problem(r) if kind == "model" else kernel_problem(r)
            if problem:
                raise ValueError(f"{path}: {kind} record {i - 1} ({r.get('name') or r.get('variant')!r}): {problem}")
        checked.append(copy.deepcopy(r))
    return checked


def _json_lines(path: Path, text: str, whole_error: json.JSONDecodeError) -> list:
    docs = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            docs.append(json.loads(line))
        except json.JSONDecodeError as e:
            if n == 1 or not docs:
                raise ValueError(f"{path}: not JSON ({whole_error})") from whole_error
            raise ValueError(f"{path}: not JSON lines (line {n}: {e})") from e
        except RecursionError as e:
            raise ValueError(f"{path}: JSON nested too deeply to be a result file") from e
    if not docs:
        raise ValueError(f"{path}: not JSON ({whole_error})") from whole_error
    return docs


def _doc_records(path: Path, doc, where: str) -> list[dict] | None:
    """The records of one JSON document (or line); None when it is none of the known layouts."""
    if isinstance(doc, dict) and str(doc.get("format", "")).startswith("fastvit-bench/"):
        records = doc.get("records", [])
        if not isinstance(records, list):
            raise ValueError(f"{path}: {where}'records' must be a list of objects, got {type(records).__name__}")
        for i, r in enumerate(records):
            if not isinstance(r, dict):
                raise ValueError(f"{path}: {where}records entry {i} must be an object, got {_json_type(r)}")
        return records
    if isinstance(doc, dict) and isinstance(doc.get("benchmarks"), list):
        bad = [i for i, b in enumerate(doc["benchmarks"]) if not isinstance(b, dict)
               or not isinstance(b.get("extra_info") or {}, dict)]  # fmt: skip
        if bad:
            raise ValueError(f"{path}: {where}benchmarks[{bad[0]}] is not an object with an extra_info object")
        return [b.get("extra_info") or {} for b in doc["benchmarks"]]
    if isinstance(doc, dict) and isinstance(doc.get("extra_info"), dict):
        return [doc["extra_info"]]
    if isinstance(doc, dict) and isinstance(doc.get("kind"), str):
        return [doc]
    return None


def _json_type(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# field -> (what it must be, test); the fields a comparison reads from every model record
_RECORD_RULES = {
    "model": ("a string", lambda v: isinstance(v, str) and v != ""),
    "variant": ("a string", lambda v: isinstance(v, str) and v != ""),
    "mode": ("a string", lambda v: isinstance(v, str) and v != ""),
    "dtype": ("a string", lambda v: isinstance(v, str) and v != ""),
    "status": ("a string", lambda v: isinstance(v, str) and v != ""),
    "batch": ("a positive integer", lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0),
    "config": ("an object or null", lambda v: v is None or isinstance(v, dict)),
    "device": ("a string or null", lambda v: v is None or isinstance(v, str)),
    "timestamp": ("a string or null", lambda v: v is None or isinstance(v, str)),
    "cpu_model": ("a string or null", lambda v: v is None or isinstance(v, str)),
    "round_ms": ("a list of finite numbers > 0 or null",
                 lambda v: v is None or (isinstance(v, list) and all(_is_number(t) and t > 0 for t in v))),
    "label": ("a string or null", lambda v: v is None or isinstance(v, str)),
    "load_avg": ("a finite number or null", lambda v: v is None or _is_number(v)),
}
_OK_RULES = {  # records that ran
    "ms_per_iter": ("a finite number > 0", lambda v: _is_number(v) and v > 0),
    "images_per_s": ("a finite number > 0", lambda v: _is_number(v) and v > 0),
    "mfu": ("a finite number >= 0 or null", lambda v: v is None or (_is_number(v) and v >= 0)),
}


# the fields a comparison reads from every kernel record (and the common ones above)
_KERNEL_RULES = {
    "op": ("a string", lambda v: isinstance(v, str) and v != ""),
    "shape": ("an object or null", lambda v: v is None or isinstance(v, dict)),
    **{k: _RECORD_RULES[k] for k in ("variant", "mode", "dtype", "status", "device", "timestamp", "round_ms", "label")},
}
_KERNEL_OK_RULES = {
    "ms_per_iter": _OK_RULES["ms_per_iter"],
    **{k: ("a finite number >= 0 or null", lambda v: v is None or (_is_number(v) and v >= 0))
       for k in ("tflops", "gbps", "max_rel_err")},
}


def record_problem(record: dict) -> str | None:
    """What makes a model record unusable for a comparison, or None."""
    return _problem(record, ("model", "variant", "mode", "dtype", "status", "batch"), _RECORD_RULES, _OK_RULES)


def kernel_problem(record: dict) -> str | None:
    """What makes a kernel record unusable for a comparison, or None."""
    return _problem(record, ("op", "variant", "mode", "dtype", "status"), _KERNEL_RULES, _KERNEL_OK_RULES)


def _problem(record: dict, required: tuple, rules: dict, ok_rules: dict) -> str | None:
    missing = [k for k in required if k not in record]
    if missing:
        return f"missing field(s) {', '.join(missing)}"
    rules = dict(rules, **(ok_rules if record["status"] == "ok" else {}))
    for name, (expected, ok) in rules.items():
        value = record.get(name)
        if not ok(value):
            return f"{name} must be {expected}, got {json.dumps(value)[:60]}"
    return None
