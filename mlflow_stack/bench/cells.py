"""The HTTP load the bench sends: each cell in interleaved rounds of bursts, and the c=1
keep-alive cells again with requests interleaved one by one."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mlflow_stack.bench.report import CONTROL, NO_AUTH, Row
from mlflow_stack.bench.servers import ARTIFACTS_API, AuthMode, Server
from mlflow_stack.loadgen import LoadResult, Target, run_interleaved, run_load

if TYPE_CHECKING:  # measure.Bench drives these functions; it imports this module
    from mlflow_stack.bench.measure import Bench

SEARCH = "/api/2.0/mlflow/experiments/search"
LOG_METRIC = "/api/2.0/mlflow/runs/log-metric"
ARTIFACT = ARTIFACTS_API  # GET <experiment>/<run>/artifacts/bench.bin
# Stretches of an interleaved run compared one by one (report.interleaved_ratios).
INTERLEAVED_BLOCKS = 10
ENDPOINT_LABELS = {
    SEARCH: "experiments/search",
    LOG_METRIC: "runs/log-metric",
    ARTIFACT: "artifacts/download",
}


def url_for(endpoint: str, server: Server) -> str:
    if endpoint == ARTIFACT:
        return f"{server.url}{ARTIFACT}/{server.artifact}"
    return f"{server.url}{endpoint}"


def method_for(endpoint: str) -> str:
    """The artifact is downloaded; search and log-metric are POSTs with a JSON body."""
    return "GET" if endpoint == ARTIFACT else "POST"


def payload_for(endpoint: str, server: Server) -> Callable[[int], dict[str, Any]]:
    def payload(i: int) -> dict[str, Any]:
        if endpoint == SEARCH:
            return {"max_results": 10}
        return {
            "run_id": server.run_id,
            "key": "bench",
            "value": float(i),
            "timestamp": int(time.time() * 1000),
            "step": i,
        }

    return payload


def configurations_of(servers: list[Server], control: bool) -> list[tuple[Server, str, AuthMode]]:
    """(server, auth mode, credentials) for every auth mode of every server; with ``control``
    each unauthenticated server once more, as auth CONTROL (the A/A control)."""
    configurations = [
        (server, mode, credentials)
        for server in servers
        for mode, credentials in server.auth_modes().items()
    ]
    if control:
        configurations += [
            (server, CONTROL, credentials)
            for server, mode, credentials in configurations
            if mode == NO_AUTH
        ]
    return configurations


def measure_side_by_side(bench: Bench, servers: list[Server], control: bool = True) -> list[Row]:
    """Every cell for every (server, auth mode), in interleaved rounds.

    Interleaving short bursts spreads any drift of the machine (another process, a cache
    warming up) evenly over the configurations compared, so their ratio stays fair. Each
    round starts one configuration later than the one before, so none is always measured
    right after the same other one (or always first, or last). Each row keeps the throughput
    of every round (``round_rps``): report.ratios pairs the rounds. With ``control`` the
    unauthenticated server is measured a second time in every round (auth ``control``): the
    same server against itself, whose ratio shows how far this machine's noise alone moves one.
    """
    max_requests, max_seconds = bench.cell_limits()
    rounds = bench.rounds()
    configurations = configurations_of(servers, control)
    rows = []
    for endpoint in (SEARCH, LOG_METRIC, ARTIFACT):
        for concurrency in (1, 4):
            for keepalive in (True, False):
                merged = {(server.label, mode): LoadResult() for server, mode, _ in configurations}
                per_round: dict[tuple[str, str], list[float]] = {key: [] for key in merged}
                for round_number in range(rounds):
                    shift = round_number % len(configurations)
                    for server, mode, (headers, auth) in (
                        configurations[shift:] + configurations[:shift]
                    ):
                        burst = run_load(
                            url_for(endpoint, server),
                            payload_for(endpoint, server),
                            headers,
                            auth,
                            concurrency,
                            keepalive,
                            max_requests // rounds,
                            max_seconds / rounds,
                            method=method_for(endpoint),
                        )
                        merged[(server.label, mode)].merge(burst)
                        per_round[(server.label, mode)].append(round(burst.throughput, 3))
                for (label, mode), result in merged.items():
                    row = {
                        "server": label,
                        "endpoint": ENDPOINT_LABELS[endpoint],
                        "auth": mode,
                        "concurrency": concurrency,
                        "connection": "keep-alive" if keepalive else "new",
                        **result.summary(),
                        "round_rps": per_round[(label, mode)],
                    }
                    rows.append(row)
                    print(
                        f"  {label:15} {row['endpoint']:20} {mode:11} c={concurrency} "
                        f"{row['connection']:10} {row['throughput_rps']:8.1f} req/s "
                        f"p50 {row['p50_ms']:7.1f} ms  p99 {row['p99_ms']:7.1f} ms"
                        f"{'  errors ' + str(row['errors']) if row['errors'] else ''}",
                        flush=True,
                    )
    return rows


def measure_interleaved(bench: Bench, servers: list[Server]) -> list[Row]:
    """The c=1 keep-alive cells again, the configurations' requests interleaved one by one
    (loadgen.run_interleaved) instead of in bursts: a much finer comparison of the same cells.

    A row per configuration and endpoint, with the unauthenticated server's second series (auth
    ``control``) as in measure_side_by_side; ``block_ms``: the mean latency of each of
    INTERLEAVED_BLOCKS consecutive stretches of the run, which report.interleaved_ratios pairs.
    """
    configurations = configurations_of(servers, control=True)
    sequence, stride = alternating([server.label for server, _, _ in configurations])
    rows = []
    for endpoint in (SEARCH, LOG_METRIC, ARTIFACT):
        targets = [
            Target(
                url_for(endpoint, server),
                payload_for(endpoint, server),
                headers,
                auth,
                method=method_for(endpoint),
            )
            for server, _, (headers, auth) in configurations
        ]
        results = run_interleaved(targets, bench.interleaved_rounds(), sequence, stride)
        for (server, mode, _), result in zip(configurations, results, strict=True):
            row = {
                "server": server.label,
                "endpoint": ENDPOINT_LABELS[endpoint],
                "auth": mode,
                "concurrency": 1,
                "connection": "keep-alive",
                "schedule": "interleaved",
                **result.summary(),
                "block_ms": block_means(result.latencies_ms, INTERLEAVED_BLOCKS),
            }
            rows.append(row)
            print(
                f"  {server.label:15} {row['endpoint']:20} {mode:11} c=1 interleaved "
                f"{row['throughput_rps']:8.1f} req/s p50 {row['p50_ms']:7.1f} ms"
                f"{'  errors ' + str(row['errors']) if row['errors'] else ''}",
                flush=True,
            )
    return rows


def alternating(servers: list[str]) -> tuple[list[int], int]:
    """A round for run_interleaved over configurations of these servers (one label per
    configuration) in which no two requests in a row, nor the last of a round and the first of
    the next, go to the same server: a request to the server that answered the previous one
    is faster (its process is running, its caches warm), so every configuration must follow
    a request to another server. Servers take turns, each through its configurations, the
    ones with fewer going round again; the stride keeps the turns across rounds."""
    groups: dict[str, list[int]] = {}
    for index, label in enumerate(servers):
        groups.setdefault(label, []).append(index)
    if len(groups) < 2:
        return list(range(len(servers))), 1
    longest = max(len(group) for group in groups.values())
    sequence = [group[i % len(group)] for i in range(longest) for group in groups.values()]
    return sequence, len(groups)


def block_means(values: list[float], blocks: int) -> list[float]:
    """The means of ``blocks`` consecutive, equal stretches of ``values`` (the remainder of an
    uneven split is left out); empty when there are fewer values than blocks."""
    size = len(values) // blocks
    if size == 0:
        return []
    return [round(sum(values[b * size : (b + 1) * size]) / size, 4) for b in range(blocks)]
