"""The bench's load schedule: interleaved rounds, each starting one configuration later, the
unauthenticated server measured twice in each (the A/A control), every round's throughput kept."""

from pathlib import Path

from mlflow_stack.bench import cells, measure
from mlflow_stack.bench.servers import Server
from mlflow_stack.loadgen import LoadResult


def recorded_schedule(monkeypatch, tmp_path: Path, control: bool):
    calls = []

    def recorded_load(url, payload, headers, auth, concurrency, keepalive, *_args, **_kwargs):
        calls.append((url, auth, concurrency, keepalive))
        # Throughput that tells the bursts apart: 10 requests a second, +1 per burst so far.
        return LoadResult(requests=10 + len(calls), seconds=1.0)

    monkeypatch.setattr(cells, "run_load", recorded_load)
    project = Server("project", "http://project", basic=("admin", "pw"), bearer="token")
    noauth = Server("project-noauth", "http://noauth")
    bench = measure.Bench(quick=False, profile="ci", home=tmp_path)
    rows = cells.measure_side_by_side(bench, [project, noauth], control=control)
    return calls, rows


def test_each_round_starts_one_configuration_later(monkeypatch, tmp_path: Path):
    calls, rows = recorded_schedule(monkeypatch, tmp_path, control=True)

    rounds = measure.Bench(quick=False, profile="ci", home=tmp_path).rounds()
    first_cell = [(url.split("/")[2], auth) for url, auth, *_ in calls[: 4 * rounds]]
    basic, bearer, none = ("project", ("admin", "pw")), ("project", None), ("noauth", None)
    control = none  # the same server, measured again in the same round
    assert first_cell[:16] == [
        basic, bearer, none, control,  # round 1
        bearer, none, control, basic,  # round 2
        none, control, basic, bearer,  # round 3
        control, basic, bearer, none,  # round 4
    ]  # fmt: skip
    assert rounds == 8
    assert len(first_cell) == 4 * 8
    # One row per configuration and cell, the rounds merged into it and kept one by one.
    assert len(rows) == 3 * 2 * 2 * 4
    first = [r for r in rows[:4]]
    assert [r["auth"] for r in first] == ["basic", "bearer", "none", "control"]
    # basic ran as burst 1, 8, 11, 14, ... of the cell: every round's throughput, in order.
    assert first[0]["round_rps"][:3] == [11.0, 18.0, 21.0]
    assert all(len(r["round_rps"]) == rounds for r in rows)


def test_without_control_the_unauthenticated_server_runs_once_a_round(monkeypatch, tmp_path):
    calls, rows = recorded_schedule(monkeypatch, tmp_path, control=False)

    assert {r["auth"] for r in rows} == {"basic", "bearer", "none"}
    assert len(calls) == 3 * 2 * 2 * 3 * 8
