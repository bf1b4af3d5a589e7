"""pytest plugin of gpu-check's pytest steps (``-p fastvit.gpucheck.plugin``): every test's
outcome (and a benchmark's ``fastvit.bench`` record, error-gated) is appended to the step's
stream as soon as it finishes; the rehearsal's delay is slept before each test."""

from __future__ import annotations

import os
import time

import pytest

from .files import Stream
from .gates import gate
from .runner import DELAY_ENV, GROUP_ENV, STREAM_ENV, injected_delay

_stream = Stream(os.environ[STREAM_ENV]) if os.environ.get(STREAM_ENV) else None


def pytest_collection_finish(session):
    if _stream is not None:
        _stream.plan(len(session.items), group=os.environ.get(GROUP_ENV))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    if os.environ.get(DELAY_ENV):
        time.sleep(injected_delay())
    yield


def _record(item, report) -> dict:
    from fastvit.bench import RECORD_FIELDS, make_record

    bench = item.funcargs.get("benchmark") if hasattr(item, "funcargs") else None
    info = dict(getattr(bench, "extra_info", None) or {})
    status = {"passed": "ok", "failed": "failed", "skipped": "skipped"}[report.outcome]
    if report.when != "call" and report.failed:
        status = "error"
    reason = None
    if report.skipped and isinstance(report.longrepr, tuple):
        reason = str(report.longrepr[2])[:500]
    elif report.failed:
        reason = str(getattr(report, "longreprtext", "") or report.longrepr)[-500:]
    if info.get("kind") and info.get("name"):  # a fastvit.bench record from a benchmark
        fields = {k: v for k, v in info.items() if k in RECORD_FIELDS and k != "timestamp"}
        if status != "ok":
            fields.update(status=status, reason=reason)
        return gate(make_record(**fields))
    return make_record(name=item.nodeid, kind="test", status=status, reason=reason, first_call_s=report.duration)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if _stream is None:
        return
    if report.when == "call" or (report.when == "setup" and not report.passed):
        try:
            _stream.record(_record(item, report))
        except Exception as e:  # noqa: BLE001 - a record that cannot be made is itself recorded
            _stream.record(dict(name=item.nodeid, kind="test", status="error", reason=f"gpu-check plugin: {type(e).__name__}: {e}"))
