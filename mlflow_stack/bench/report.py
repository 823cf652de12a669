"""The bench's verdict against its targets, the Markdown report and the chart."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

# One measured cell (server, endpoint, auth, concurrency, connection, throughput, latencies).
Row = dict[str, Any]
# The project's servers (default_permission READ, then NO_PERMISSIONS) and what is higher-better.
PROJECT_SERVERS = ("project", "project-nop")
RATIO_TARGETS = frozenset(
    {
        "auth_throughput_ratio",
        "admin_throughput_ratio",
        "user_throughput_ratio",
        "artifact_throughput_ratio",
    }
)
ARTIFACT_ENDPOINT = "artifacts/download"
# The auth column of a server without authentication, and of its second measurement in the
# same rounds (the A/A control).
NO_AUTH = "none"
CONTROL = "control"

TARGETS = {
    "auth_throughput_ratio": 0.9,
    "admin_throughput_ratio": 0.95,
    "user_throughput_ratio": 0.9,
    "artifact_throughput_ratio": 0.8,
    "search_p50_vs_noauth": 1.15,
    "admin_round_trips": 1,
    "user_round_trips": 3,
    "keepalive_search_p50_ms": 10.0,
    "warm_up_seconds": 5.0,
    "cold_up_seconds": 10.0,
    "rest_rss_mb": 600.0,
    "audit_ms_per_request": 0.2,
}


def ratios(rows: list[Row], auth_server: str, noauth_server: str) -> list[Row]:
    """Each cell of ``auth_server`` against the same cell of ``noauth_server`` (auth none).

    ``ratio`` pairs the rounds: the median, over the cell's rounds, of the authenticated
    burst's throughput over the unauthenticated burst's of the same round, so a burst that
    stalled (another tenant of the machine, a checkpoint) moves one round's ratio, not the
    cell's. ``pooled_ratio`` divides the throughputs of all rounds merged. Rows without
    rounds (one burst) get the pooled ratio as ``ratio``. With ``auth_server`` the same as
    ``noauth_server`` this gives the A/A control's cells.
    """
    base = {
        (r["endpoint"], r["concurrency"], r["connection"]): r
        for r in rows
        if r["server"] == noauth_server and r["auth"] == NO_AUTH
    }
    out = []
    against_itself = auth_server == noauth_server  # the A/A control: not the reference row
    for row in rows:
        if row["server"] != auth_server or (against_itself and row["auth"] == NO_AUTH):
            continue
        ref = base.get((row["endpoint"], row["concurrency"], row["connection"]))
        if ref and ref["throughput_rps"]:
            pooled = round(row["throughput_rps"] / ref["throughput_rps"], 3)
            rounds = paired_ratios(row.get("round_rps", []), ref.get("round_rps", []))
            out.append(
                {
                    "server": auth_server,
                    "auth": row["auth"],
                    "endpoint": row["endpoint"],
                    "concurrency": row["concurrency"],
                    "connection": row["connection"],
                    "ratio": round(statistics.median(rounds), 3) if rounds else pooled,
                    "pooled_ratio": pooled,
                    "round_ratios": [round(r, 3) for r in rounds],
                    "p50_ratio": (
                        round(row["p50_ms"] / ref["p50_ms"], 3) if ref.get("p50_ms") else None
                    ),
                }
            )
    return out


def interleaved_ratios(rows: list[Row], auth_server: str, noauth_server: str) -> list[Row]:
    """Each interleaved cell (cells.measure_interleaved) of ``auth_server`` against the
    unauthenticated one of ``noauth_server``, stretch by stretch.

    A stretch's ratio is the unauthenticated mean latency over the authenticated one in the
    same stretch of the run (at c=1, the throughput ratio). ``ratio`` is the median over the
    stretches; ``interval`` their second lowest and second highest, which hold the median of
    such ratios 98 times in 100 with 10 stretches, whatever their distribution.
    """
    base = {r["endpoint"]: r for r in rows if r["server"] == noauth_server and r["auth"] == NO_AUTH}
    against_itself = auth_server == noauth_server
    out = []
    for row in rows:
        if row["server"] != auth_server or (against_itself and row["auth"] == NO_AUTH):
            continue
        ref = base.get(row["endpoint"])
        blocks = row.get("block_ms", [])
        if not ref or not blocks or len(blocks) != len(ref.get("block_ms", [])):
            continue
        stretches = sorted(r / m for r, m in zip(ref["block_ms"], blocks, strict=True) if m)
        if len(stretches) != len(blocks):
            continue
        inner = 1 if len(stretches) >= 6 else 0
        out.append(
            {
                "server": auth_server,
                "auth": row["auth"],
                "endpoint": row["endpoint"],
                "concurrency": 1,
                "connection": "keep-alive",
                "schedule": "interleaved",
                "ratio": round(statistics.median(stretches), 3),
                "interval": [round(stretches[inner], 3), round(stretches[-1 - inner], 3)],
                "p50_ratio": (
                    round(row["p50_ms"] / ref["p50_ms"], 3) if ref.get("p50_ms") else None
                ),
            }
        )
    return out


def paired_ratios(measured: list[float], reference: list[float]) -> list[float]:
    """Round by round, measured / reference; empty unless both have the same rounds, all
    with throughput."""
    if not measured or len(measured) != len(reference) or not all(reference):
        return []
    return [m / r for m, r in zip(measured, reference, strict=True)]


def noise(controls: list[Row]) -> dict[str, Any] | None:
    """The A/A control's spread: how far from 1.0 the same server lands against itself."""
    found = sorted(float(r["ratio"]) for r in controls)
    if not found:
        return None
    return {
        "cells": len(found),
        "lowest": found[0],
        "highest": found[-1],
        "median": round(statistics.median(found), 3),
        "pooled_lowest": min(float(r["pooled_ratio"]) for r in controls),
        "pooled_highest": max(float(r["pooled_ratio"]) for r in controls),
    }


def verdict(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    project_ratios = [r["ratio"] for r in results.get("ratios", []) if r["server"] == "project"]
    keepalive_search = [
        r["p50_ms"]
        for r in results.get("load", [])
        if r["server"] == "project"
        and r["endpoint"] == "experiments/search"
        and r["connection"] == "keep-alive"
        and r["concurrency"] == 1
    ]
    project = results.get("project", {})
    cells = [r for r in results.get("ratios", []) if r["server"] in PROJECT_SERVERS]

    def worst(pick: Any, values: str = "ratio", highest: bool = False) -> float | None:
        found = [float(r[values]) for r in cells if pick(r) and r.get(values) is not None]
        if not found:
            return None
        return max(found) if highest else min(found)

    trips = [t for rows in results.get("round_trips", {}).values() for t in rows]

    def most_trips(admin: bool) -> float | None:
        found = [t["auth"] for t in trips if t["auth_mode"].startswith("user-") != admin]
        return max(found) if found else None

    measured = {
        "auth_throughput_ratio": min(project_ratios) if project_ratios else None,
        "admin_throughput_ratio": worst(
            lambda r: (
                r.get("auth") in ("basic", "bearer") and r.get("endpoint") != ARTIFACT_ENDPOINT
            )
        ),
        "user_throughput_ratio": worst(
            lambda r: (
                str(r.get("auth")).startswith("user-") and r.get("endpoint") != ARTIFACT_ENDPOINT
            )
        ),
        "artifact_throughput_ratio": worst(lambda r: r.get("endpoint") == ARTIFACT_ENDPOINT),
        "search_p50_vs_noauth": worst(
            lambda r: (
                r.get("endpoint") == "experiments/search"
                and r.get("concurrency") == 1
                and r.get("connection") == "keep-alive"
            ),
            values="p50_ratio",
            highest=True,
        ),
        "admin_round_trips": most_trips(admin=True),
        "user_round_trips": most_trips(admin=False),
        "keepalive_search_p50_ms": max(keepalive_search) if keepalive_search else None,
        "warm_up_seconds": project.get("warm_up_seconds"),
        "cold_up_seconds": project.get("cold_up_seconds"),
        "rest_rss_mb": project.get("rest_rss_mb"),
        "audit_ms_per_request": (results.get("audit") or {}).get("mean_ms"),
    }
    verdicts = {}
    for key, target in TARGETS.items():
        value = measured[key]
        met = value is not None and (value >= target if key in RATIO_TARGETS else value <= target)
        verdicts[key] = {"measured": value, "target": target, "met": met}
    return verdicts


def markdown(results: dict[str, Any]) -> str:
    lines = [
        f"# Benchmark {results['date']}",
        "",
        f"MLflow {results['mlflow']}, {results['machine']['cpus']} CPUs, "
        f"{results['machine']['memory_gb']} GB, {results['machine']['platform']}"
        f"{' (quick run)' if results['quick'] else ''}.",
        "",
        "| target | measured | target | met |",
        "| --- | --- | --- | --- |",
    ]
    names = {
        "auth_throughput_ratio": "authenticated / unauthenticated throughput (worst cell)",
        "admin_throughput_ratio": "admin, search and log-metric (worst cell)",
        "user_throughput_ratio": "non-admin with a grant, search and log-metric (worst cell)",
        "artifact_throughput_ratio": "artifact download (worst cell)",
        "search_p50_vs_noauth": "p50 search, c=1, reused connection / unauthenticated p50",
        "admin_round_trips": "database round trips added by auth, admin (most)",
        "user_round_trips": "database round trips added by auth, non-admin (most)",
        "keepalive_search_p50_ms": "p50 authenticated search, reused connection (ms)",
        "warm_up_seconds": "`invoke up`, warm (s)",
        "cold_up_seconds": "`invoke up`, cold (s)",
        "rest_rss_mb": "whole stack at rest, RSS (MB)",
        "audit_ms_per_request": "audit log, time in its hooks per audited request (ms, mean)",
    }
    for key, item in results["verdict"].items():
        lines.append(
            f"| {names[key]} | {item['measured']} | {item['target']} | "
            f"{'yes' if item['met'] else 'no'} |"
        )
    stock = results.get("stock", {})
    lines += [
        "",
        f"Stock MLflow (defaults): warm start {stock.get('warm_start_seconds')} s, cold "
        f"{stock.get('cold_start_seconds')} s, {stock.get('processes')} processes, "
        f"{stock.get('rest_rss_mb_mlflow')} MB RSS (MLflow processes only). "
        f"`nox -s smoke` against a running stack: {results.get('smoke', {}).get('seconds')} s.",
        "",
        "| server | endpoint | auth | c | connection | req/s | p50 ms | p99 ms | ratio "
        "| pooled ratio | p50 ratio | auth round trips |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    measured_noise = results.get("noise")
    if measured_noise:
        lines[-2:-2] = [
            f"A/A control (the unauthenticated server measured twice in every round, so 1.0 "
            f"is exact): {measured_noise['cells']} cells {measured_noise['lowest']}–"
            f"{measured_noise['highest']}, median {measured_noise['median']} (pooled "
            f"{measured_noise['pooled_lowest']}–{measured_noise['pooled_highest']}).",
            "",
        ]
    trips_of = {
        (t["server"], t["auth_mode"], t["endpoint"]): t["auth"]
        for rows in results.get("round_trips", {}).values()
        for t in rows
    }
    compared = results.get("ratios", []) + results.get("controls", [])
    ratio_of = {
        (r["server"], r["auth"], r["endpoint"], r["concurrency"], r["connection"]): r
        for r in compared
    }
    for row in results.get("load", []):
        key = (row["server"], row["auth"], row["endpoint"], row["concurrency"], row["connection"])
        cell = ratio_of.get(key, {})
        lines.append(
            f"| {row['server']} | {row['endpoint']} | {row['auth']} | {row['concurrency']} | "
            f"{row['connection']} | {row['throughput_rps']} | {row['p50_ms']} | {row['p99_ms']} "
            f"| {cell.get('ratio', '')} | {cell.get('pooled_ratio', '')} "
            f"| {cell.get('p50_ratio') or ''} | {trips_of.get(key[:3], '')} |"
        )
    lines += interleaved_section(results)
    lines += [
        "",
        "ratio: throughput of the authenticated cell / the same cell on the same server "
        "with authentication off (project-noauth, stock-noauth), the median over the cell's "
        "rounds of one round's bursts compared; pooled ratio: all rounds merged first; "
        "control: the unauthenticated server against itself. project: default_permission "
        "READ; project-nop: NO_PERMISSIONS; basic/bearer: the admin; user-*: a non-admin with "
        "EDIT on the bench's experiment. auth round trips: database round trips per request "
        "added by authentication and authorization, counted in-process (SQLAlchemy events) "
        "on the same databases.",
        "",
    ]
    return "\n".join(lines)


def interleaved_section(results: dict[str, Any]) -> list[str]:
    """The interleaved c=1 cells (cells.measure_interleaved), if the run has them."""
    cells = results.get("interleaved_ratios") or []
    if not cells:
        return []
    rows = {(r["server"], r["auth"], r["endpoint"]): r for r in results.get("interleaved", [])}
    lines = [
        "",
        "c=1, reused connection, the configurations' requests interleaved one by one "
        "instead of in bursts (a finer measurement of the same cells): ratio = median over 10 "
        "stretches of the run of the unauthenticated mean latency / the authenticated one in "
        "the same stretch; interval: where that median lies 98 times in 100. Control: the "
        "unauthenticated server against itself.",
        "",
        "| server | endpoint | auth | requests | p50 ms | ratio | interval | p50 ratio |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for cell in cells:
        row = rows.get((cell["server"], cell["auth"], cell["endpoint"]), {})
        low, high = cell["interval"]
        lines.append(
            f"| {cell['server']} | {cell['endpoint']} | {cell['auth']} | "
            f"{row.get('requests', '')} | {row.get('p50_ms', '')} | {cell['ratio']} | "
            f"{low}–{high} | {cell.get('p50_ratio') or ''} |"
        )
    return lines


def chart(results: dict[str, Any], target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(15, 6), gridspec_kw={"width_ratios": [3, 2]})
    cells = [r for r in results.get("ratios", [])]
    labels = sorted({(r["endpoint"], r["concurrency"], r["connection"]) for r in cells})
    series = [
        ("project", "basic"),
        ("project", "bearer"),
        ("project", "user-basic"),
        ("project-nop", "user-basic"),
        ("stock", "basic"),
    ]
    width = 0.8 / len(series)
    for index, (server, mode) in enumerate(series):
        values = []
        for label in labels:
            match = [
                r["ratio"]
                for r in cells
                if r["server"] == server
                and r["auth"] == mode
                and (r["endpoint"], r["concurrency"], r["connection"]) == label
            ]
            values.append(match[0] if match else 0)
        left.bar(
            [i + index * width for i in range(len(labels))], values, width, label=f"{server} {mode}"
        )
    left.axhline(TARGETS["auth_throughput_ratio"], color="red", linestyle="--", label="target 0.9")
    left.set_xticks([i + width for i in range(len(labels))])
    left.set_xticklabels([f"{e.split('/')[-1]}\nc={c}\n{n}" for e, c, n in labels], fontsize=8)
    left.set_ylabel("authenticated / unauthenticated throughput")
    left.set_title("Cost of authentication (higher is better)")
    left.legend(fontsize=8)

    verdict = results["verdict"]
    keys = ["keepalive_search_p50_ms", "warm_up_seconds", "cold_up_seconds", "rest_rss_mb"]
    names = ["p50 search\nkeep-alive (ms)", "up warm (s)", "up cold (s)", "RSS at rest\n(x100 MB)"]
    measured = [verdict[k]["measured"] or 0 for k in keys]
    targets = [verdict[k]["target"] for k in keys]
    measured[-1] /= 100
    targets[-1] /= 100
    positions = range(len(keys))
    right.bar(
        [p - 0.2 for p in positions],
        measured,
        0.4,
        label="measured",
        color=["green" if verdict[k]["met"] else "orange" for k in keys],
    )
    right.bar([p + 0.2 for p in positions], targets, 0.4, label="target", color="lightgray")
    right.set_xticks(list(positions))
    right.set_xticklabels(names, fontsize=8)
    right.set_title("Latency, start time, memory (lower is better)")
    right.legend(fontsize=8)
    fig.suptitle(f"mlflow-stack vs stock MLflow {results['mlflow']} - {results['date']}")
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    plt.close(fig)
