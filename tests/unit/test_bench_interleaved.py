"""The bench's interleaved c=1 measurement: requests take turns one by one between the
configurations (loadgen.run_interleaved), and stretches of the run are compared pairwise
(report.interleaved_ratios)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import ClassVar

import pytest

from mlflow_stack import loadgen
from mlflow_stack.bench import cells, measure, report
from mlflow_stack.bench.servers import Server
from mlflow_stack.loadgen import LoadResult, Target


class RecordingSession:
    sent: ClassVar[list[tuple[str, object]]] = []

    def request(self, method, url, json=None, **_kwargs):
        RecordingSession.sent.append((url, json))

        class Answer:
            status_code = 503 if url.endswith("/broken") else 200

        return Answer()

    def close(self) -> None:
        pass


@pytest.fixture
def sent(monkeypatch) -> list[tuple[str, object]]:
    RecordingSession.sent = []
    monkeypatch.setattr(loadgen.requests, "Session", RecordingSession)
    return RecordingSession.sent


def test_requests_take_turns_and_each_round_starts_one_target_later(sent):
    targets = [Target(f"http://{name}", lambda number: {"n": number}, {}, None) for name in "abc"]
    results = loadgen.run_interleaved(targets, rounds=4)

    order = [url[len("http://") :] for url, _ in sent]
    assert order == list("abcbcacababc")
    # Every request of the run gets a number of its own (log-metric's step, value).
    numbers = [body["n"] for _, body in sent]
    assert sorted(numbers) == list(range(12))
    assert [r.requests for r in results] == [4, 4, 4]
    assert all(len(r.latencies_ms) == 4 and r.errors == 0 for r in results)
    # One client: its throughput is requests over the time they took.
    assert all(r.seconds > 0 for r in results)


def test_failed_requests_count_as_errors_not_latencies(sent):
    targets = [
        Target("http://ok", lambda number: {}, {}, None, method="GET"),
        Target("http://x/broken", lambda number: {}, {}, None, method="GET"),
    ]
    ok, broken = loadgen.run_interleaved(targets, rounds=3)
    assert (ok.errors, len(ok.latencies_ms)) == (0, 3)
    assert (broken.errors, len(broken.latencies_ms), broken.statuses) == (3, 0, {503: 3})
    assert all(body is None for _, body in sent)  # GET: no body


def test_the_bench_interleaves_every_c1_configuration_with_a_control(monkeypatch, tmp_path):
    seen: list[list[Target]] = []
    schedules: list[tuple[list[int], int]] = []

    def fake_run(targets, rounds, sequence, stride):
        seen.append(targets)
        schedules.append((sequence, stride))
        # Latencies 1..rounds ms for every target: block means are the stretches' means.
        return [
            LoadResult(
                requests=rounds, seconds=1.0, latencies_ms=[float(i + 1) for i in range(rounds)]
            )
            for _ in targets
        ]

    monkeypatch.setattr(cells, "run_interleaved", fake_run)
    project = Server("project", "http://project", basic=("admin", "pw"), bearer="token")
    project.artifact = "1/r/artifacts/bench.bin"
    noauth = Server("project-noauth", "http://noauth")
    bench = measure.Bench(quick=True, profile="ci", home=tmp_path)
    rows = cells.measure_interleaved(bench, [project, noauth])

    assert len(seen) == 3  # search, log-metric, download
    assert [t.method for t in seen[2]] == ["GET"] * 4
    assert [(r["server"], r["auth"]) for r in rows[:4]] == [
        ("project", "basic"),
        ("project", "bearer"),
        ("project-noauth", "none"),
        ("project-noauth", "control"),
    ]
    assert all(r["schedule"] == "interleaved" and r["concurrency"] == 1 for r in rows)
    rounds = bench.interleaved_rounds()
    assert rows[0]["block_ms"] == cells.block_means(
        [float(i + 1) for i in range(rounds)], cells.INTERLEAVED_BLOCKS
    )
    assert len(rows[0]["block_ms"]) == 10
    # basic, bearer (project) and none, control (project-noauth) take turns.
    assert schedules[0] == ([0, 2, 1, 3], 2)


def sent_in_order(sequence: list[int], stride: int, rounds: int) -> list[int]:
    order = []
    for round_number in range(rounds):
        shift = (round_number * stride) % len(sequence)
        order += sequence[shift:] + sequence[:shift]
    return order


@pytest.mark.parametrize(
    "servers",
    [
        ["project"] * 4 + ["project-noauth"] * 2,  # the READ pass: admin and non-admin modes
        ["project-nop"] * 2 + ["project-noauth"] * 2,  # the NO_PERMISSIONS pass
        ["a", "b", "b", "c", "c", "c"],
    ],
)
def test_no_request_goes_to_the_server_that_answered_the_one_before(servers):
    """A request to the server that just answered is faster (up to about 15% for a search):
    every configuration of the interleaved run must follow a request to another server."""
    sequence, stride = cells.alternating(servers)
    order = sent_in_order(sequence, stride, rounds=7)
    labels = [servers[index] for index in order]
    assert all(first != second for first, second in itertools.pairwise(labels))
    assert set(order) == set(range(len(servers)))  # every configuration is measured


def test_a_sequence_turns_by_its_stride_each_round(sent):
    targets = [Target(f"http://{name}", lambda number: {"n": number}, {}, None) for name in "abc"]
    loadgen.run_interleaved(targets, rounds=3, sequence=[0, 2, 1, 2], stride=2)
    order = [url[len("http://") :] for url, _ in sent]
    assert order == list("acbcbcacacbc")
    assert sorted(body["n"] for _, body in sent) == list(range(12))


def test_block_means_split_evenly_and_drop_the_remainder():
    assert cells.block_means([1, 1, 3, 3, 5, 5, 99], 3) == [1.0, 3.0, 5.0]
    assert cells.block_means([1.0, 2.0], 3) == []


def interleaved_row(server: str, auth: str, blocks: list[float]) -> dict:
    return {
        "server": server,
        "auth": auth,
        "endpoint": "experiments/search",
        "p50_ms": blocks[0],
        "block_ms": blocks,
    }


def test_a_cell_is_the_median_stretch_with_an_interval_that_ignores_one_stall():
    reference = [5.0] * 10
    # Authenticated 4% slower in every stretch but one, which stalled (a neighbour's burst).
    measured = [5.2] * 9 + [50.0]
    rows = [
        interleaved_row("project-noauth", "none", reference),
        interleaved_row("project-noauth", "control", [5.0] * 9 + [4.0]),
        interleaved_row("project", "basic", measured),
    ]
    (cell,) = report.interleaved_ratios(rows, "project", "project-noauth")
    assert cell["ratio"] == round(5.0 / 5.2, 3)
    assert cell["interval"] == [round(5.0 / 5.2, 3), round(5.0 / 5.2, 3)]
    assert cell["p50_ratio"] == 1.04
    (control,) = report.interleaved_ratios(rows, "project-noauth", "project-noauth")
    assert control["auth"] == "control" and control["ratio"] == 1.0
    assert control["interval"] == [1.0, 1.0]  # the one fast stretch is outside it


def test_cells_without_matching_stretches_are_left_out():
    rows = [
        interleaved_row("project-noauth", "none", [5.0] * 10),
        interleaved_row("project", "basic", [5.0] * 9),
    ]
    assert report.interleaved_ratios(rows, "project", "project-noauth") == []


def test_the_report_shows_the_interleaved_cells_only_when_measured():
    rows = [
        interleaved_row("project-noauth", "none", [5.0] * 10),
        interleaved_row("project", "bearer", [5.5] * 10),
    ]
    for row in rows:
        row["requests"] = 1000
    results = {
        "interleaved": rows,
        "interleaved_ratios": report.interleaved_ratios(rows, "project", "project-noauth"),
    }
    lines = report.interleaved_section(results)
    assert any("interleaved one by one" in line for line in lines)
    assert (
        "| project | experiments/search | bearer | 1000 | 5.5 | 0.909 | 0.909–0.909 | 1.1 |"
        in lines
    )
    assert report.interleaved_section({}) == []


def test_the_run_has_fewer_rounds_when_quick(tmp_path: Path):
    assert measure.Bench(True, "ci", tmp_path).interleaved_rounds() == 200
    assert measure.Bench(False, "ci", tmp_path).interleaved_rounds() == 1000
