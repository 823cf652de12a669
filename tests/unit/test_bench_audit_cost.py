"""The bench's measurement of the audit log's cost per request, and its target."""

from __future__ import annotations

import flask
from mlflow.server.fastapi_app import _EfficientWSGIMiddleware

from mlflow_stack.auth import audit, audit_requests
from mlflow_stack.bench import report, roundtrips

LOG_METRIC = "/api/2.0/mlflow/runs/log-metric"


def test_audit_cost_times_the_audit_hooks_of_each_audited_request(tmp_path, monkeypatch):
    monkeypatch.setattr(roundtrips, "AUDITED", 25)
    app = flask.Flask("bench-audit")

    @app.post(LOG_METRIC)
    def log_metric() -> dict[str, str]:
        return {}

    audit_file = tmp_path / "audit.jsonl"
    audit_requests.install(app, audit.Settings(audit_file))
    request = {"name": "basic log-metric", "method": "POST", "path": LOG_METRIC}
    request |= {"json": {"run_id": "r1", "key": "loss", "value": 1.0}, "headers": {}}

    cost = roundtrips.audit_cost(app, _EfficientWSGIMiddleware(app), request)

    assert cost is not None
    assert cost["requests"] == 25 and cost["hooks"] == 2
    assert 0 < cost["p50_ms"] <= cost["p99_ms"]
    # Every timed request was audited: the hooks that were timed are the ones that write.
    assert len(audit_file.read_text().splitlines()) == 25


def test_audit_cost_is_none_without_an_audit_log():
    app = flask.Flask("bench-no-audit")
    assert roundtrips.audit_cost(app, _EfficientWSGIMiddleware(app), {}) is None


def test_the_audit_target_is_met_below_0_2_ms_only():
    for mean_ms, met in ((0.09, True), (0.35, False)):
        verdicts = report.verdict({"audit": {"mean_ms": mean_ms}})
        assert verdicts["audit_ms_per_request"] == {"measured": mean_ms, "target": 0.2, "met": met}
    assert report.verdict({})["audit_ms_per_request"]["met"] is False
