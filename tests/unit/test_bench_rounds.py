"""The bench's load schedule: interleaved rounds, each starting one configuration later."""

from pathlib import Path

from mlflow_stack.bench import measure
from mlflow_stack.bench.servers import Server
from mlflow_stack.loadgen import LoadResult


def test_each_round_starts_one_configuration_later(monkeypatch, tmp_path: Path):
    calls = []

    def recorded_load(url, payload, headers, auth, concurrency, keepalive, *_args, **_kwargs):
        calls.append((url, auth, concurrency, keepalive))
        return LoadResult()

    monkeypatch.setattr(measure, "run_load", recorded_load)
    project = Server("project", "http://project", basic=("admin", "pw"), bearer="token")
    noauth = Server("project-noauth", "http://noauth")
    bench = measure.Bench(quick=False, profile="ci", home=tmp_path)

    rows = measure.measure_side_by_side(bench, [project, noauth])

    first_cell = [
        (url.split("/")[2], auth) for url, auth, c, keepalive in calls[:12] if c == 1 and keepalive
    ]
    basic, bearer, none = ("project", ("admin", "pw")), ("project", None), ("noauth", None)
    assert first_cell == [
        basic, bearer, none,  # round 1
        bearer, none, basic,  # round 2
        none, basic, bearer,  # round 3
        basic, bearer, none,  # round 4
    ]  # fmt: skip
    # One row per configuration and cell, the rounds merged into it.
    assert len(rows) == 3 * 3 * 2 * 2
