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
    results["verdict"] = bench_report.verdict(results)
    report = bench_report.markdown(results)
    assert (
        "| project | experiments/search | basic | 1 | keep-alive | 90.0 | 9.0 | 18.0 | 0.9 |"
        in report
    )
    assert "| `invoke up`, warm (s) | 4.0 | 5.0 | yes |" in report
    chart = tmp_path / "chart.png"
    bench_report.chart(results, chart)
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
