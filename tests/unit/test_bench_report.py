"""The bench's arithmetic and report, on rows shaped like a real run's."""

from mlflow_stack.bench import report as bench_report


def row(
    server, auth, rps, p50, endpoint="experiments/search", concurrency=1, connection="keep-alive"
):
    return {
        "server": server,
        "auth": auth,
        "endpoint": endpoint,
        "concurrency": concurrency,
        "connection": connection,
        "throughput_rps": rps,
        "p50_ms": p50,
        "p99_ms": p50 * 2,
    }


def test_ratios_compare_each_cell_with_the_same_cell_without_auth():
    rows = [
        row("project", "basic", 90.0, 9.0),
        row("project", "bearer", 45.0, 20.0),
        row("project-noauth", "none", 100.0, 8.0),
        row("project", "basic", 50.0, 30.0, concurrency=4),
        row("project-noauth", "none", 200.0, 10.0, concurrency=4),
    ]
    ratios = bench_report.ratios(rows, "project", "project-noauth")
    assert sorted((r["auth"], r["concurrency"], r["ratio"]) for r in ratios) == [
        ("basic", 1, 0.9),
        ("basic", 4, 0.25),
        ("bearer", 1, 0.45),
    ]


def test_a_cell_ratio_is_the_median_of_its_rounds_compared_one_by_one():
    # Round 2 of the unauthenticated server stalled; merged, it would flatter every ratio,
    # and round 3 of the authenticated one stalled, which merged would sink it.
    rows = [
        {**row("project", "basic", 80.0, 9.0), "round_rps": [90.0, 90.0, 30.0, 92.0]},
        {**row("project-noauth", "none", 75.0, 8.0), "round_rps": [100.0, 20.0, 100.0, 100.0]},
        {**row("project-noauth", "control", 99.0, 8.0), "round_rps": [98.0, 101.0, 99.0, 100.0]},
    ]
    (cell,) = bench_report.ratios(rows, "project", "project-noauth")
    assert cell["round_ratios"] == [0.9, 4.5, 0.3, 0.92]
    assert cell["ratio"] == 0.91  # the median of the four
    assert cell["pooled_ratio"] == round(80.0 / 75.0, 3)
    # The same server against itself: only the control is compared, not the reference.
    (control,) = bench_report.ratios(rows, "project-noauth", "project-noauth")
    assert control["auth"] == "control"
    assert control["ratio"] == round((1.0 + 0.99) / 2, 3)
    assert bench_report.noise([control]) == {
        "cells": 1,
        "lowest": control["ratio"],
        "highest": control["ratio"],
        "median": control["ratio"],
        "pooled_lowest": 1.32,
        "pooled_highest": 1.32,
    }


def test_rows_without_the_same_rounds_fall_back_to_the_pooled_ratio():
    rows = [
        {**row("project", "basic", 90.0, 9.0), "round_rps": [90.0, 90.0]},
        {**row("project-noauth", "none", 100.0, 8.0), "round_rps": [100.0, 0.0]},
    ]
    (cell,) = bench_report.ratios(rows, "project", "project-noauth")
    assert (cell["ratio"], cell["pooled_ratio"], cell["round_ratios"]) == (0.9, 0.9, [])


def test_verdict_takes_the_worst_cell_and_each_target_direction():
    results = {
        "ratios": [
            {"server": "project", "ratio": 0.95},
            {"server": "project", "ratio": 0.91},
            {"server": "stock", "ratio": 0.01},
        ],
        "load": [row("project", "basic", 100.0, 9.5), row("project", "bearer", 100.0, 10.5)],
        "project": {"warm_up_seconds": 4.0, "cold_up_seconds": 11.0, "rest_rss_mb": 500.0},
    }
    verdict = bench_report.verdict(results)
    assert verdict["auth_throughput_ratio"] == {"measured": 0.91, "target": 0.9, "met": True}
    assert verdict["keepalive_search_p50_ms"]["measured"] == 10.5
    assert verdict["keepalive_search_p50_ms"]["met"] is False
    assert verdict["warm_up_seconds"]["met"] is True
    assert verdict["cold_up_seconds"]["met"] is False
    assert verdict["rest_rss_mb"]["met"] is True


def test_the_report_and_chart_are_written(tmp_path):
    load = [
        row("project", "basic", 90.0, 9.0),
        row("project-noauth", "none", 100.0, 8.0),
        row("stock", "basic", 3.0, 300.0),
        row("stock-noauth", "none", 100.0, 8.0),
    ]
    results = {
        "date": "2026-11-26T00:00:00Z",
        "quick": True,
        "mlflow": "3.17.2",
        "machine": {"cpus": 2, "memory_gb": 24.0, "platform": "Linux"},
        "load": load,
        "ratios": bench_report.ratios(load, "project", "project-noauth")
        + bench_report.ratios(load, "stock", "stock-noauth"),
        "project": {"warm_up_seconds": 4.0, "cold_up_seconds": 8.0, "rest_rss_mb": 400.0},
        "stock": {
            "warm_start_seconds": 10.0,
            "cold_start_seconds": 12.0,
            "processes": 15,
            "rest_rss_mb_mlflow": 3000.0,
        },
        "smoke": {"seconds": 1.5, "exit_code": 0},
    }
    results["controls"] = [{**results["ratios"][0], "server": "project-noauth", "ratio": 0.97}]
    results["noise"] = bench_report.noise(results["controls"])
    results["verdict"] = bench_report.verdict(results)
    report = bench_report.markdown(results)
    assert (
        "| project | experiments/search | basic | 1 | keep-alive | 90.0 | 9.0 | 18.0 | 0.9 | 0.9 |"
        in report
    )
    assert "A/A control (the unauthenticated server measured twice in every round" in report
    assert "1 cells 0.97–0.97, median 0.97 (pooled 0.9–0.9)" in report
    assert "| `invoke up`, warm (s) | 4.0 | 5.0 | yes |" in report
    chart = tmp_path / "chart.png"
    bench_report.chart(results, chart)
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
