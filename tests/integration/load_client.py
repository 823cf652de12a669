"""Metric writers for fault-injection tests: they remember exactly what the server acknowledged.

Each writer thread owns one metric key and logs strictly increasing steps (value == step), so
every stored value names the attempt that wrote it. Nothing is ever retried: an attempt whose
answer was lost (connection reset, timeout, 5xx) may or may not be stored, an attempt answered
with HTTP 200 must be. `stored_steps()` reads a key's full history back through get-history.

Bounded everywhere: a deadline per load, a request cap per writer, a timeout per request, and
traffic only to the stack's own URL on 127.0.0.1.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests

REQUEST_TIMEOUT = 10.0
MAX_REQUESTS_PER_WRITER = 4000
BATCH_SIZE = 10
MAX_HISTORY_PAGES = 200


def check_local(url: str) -> str:
    host = urlsplit(url).hostname
    if host not in ("127.0.0.1", "localhost"):
        raise ValueError(f"load only goes to this machine, not {url}")
    return url.rstrip("/")


@dataclass
class Writer:
    key: str
    batch: bool = False
    attempted: list[int] = field(default_factory=list)
    acked: list[int] = field(default_factory=list)
    # When each acknowledgement arrived (time.monotonic()), parallel to acked batches.
    ack_times: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    requests: int = 0


class MetricLoad:
    """`writers` threads logging to one run until stop() or the deadline."""

    def __init__(
        self,
        url: str,
        auth: tuple[str, str],
        run_id: str,
        prefix: str,
        writers: int = 3,
        batch_writers: int = 0,
        max_seconds: float = 120.0,
        pause: float = 0.0,
        verify: str | bool = True,
    ) -> None:
        self.url = check_local(url)
        self.auth = auth
        self.verify = verify
        self.run_id = run_id
        self.max_seconds = max_seconds
        self.pause = pause
        self.writers = [Writer(f"{prefix}-w{i}") for i in range(writers)] + [
            Writer(f"{prefix}-b{i}", batch=True) for i in range(batch_writers)
        ]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    # --- running ---------------------------------------------------------------------------

    def start(self) -> MetricLoad:
        deadline = time.monotonic() + self.max_seconds
        for writer in self.writers:
            thread = threading.Thread(target=self._run, args=(writer, deadline), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=REQUEST_TIMEOUT + 5)
        assert not any(t.is_alive() for t in self._threads), "a writer did not stop"

    def _run(self, writer: Writer, deadline: float) -> None:
        session = requests.Session()
        session.auth = self.auth
        # Off, REQUESTS_CA_BUNDLE (where set) would replace the session's verify.
        session.trust_env = False
        session.verify = self.verify
        step = 0
        while (
            not self._stop.is_set()
            and time.monotonic() < deadline
            and writer.requests < MAX_REQUESTS_PER_WRITER
        ):
            steps = list(range(step, step + (BATCH_SIZE if writer.batch else 1)))
            step += len(steps)
            with self._lock:
                writer.attempted.extend(steps)
                writer.requests += 1
            status = self._send(session, writer, steps)
            with self._lock:
                writer.statuses[status] += 1
                if status == 200:
                    writer.acked.extend(steps)
                    writer.ack_times.append(time.monotonic())
            if status != 200:
                time.sleep(0.2)  # the server is down or failing: do not spin
            elif self.pause:
                time.sleep(self.pause)
        session.close()

    def _send(self, session: requests.Session, writer: Writer, steps: list[int]) -> int | str:
        now = int(time.time() * 1000)
        metrics = [
            {"key": writer.key, "value": float(s), "timestamp": now, "step": s} for s in steps
        ]
        try:
            if writer.batch:
                response = session.post(
                    f"{self.url}/api/2.0/mlflow/runs/log-batch",
                    json={"run_id": self.run_id, "metrics": metrics},
                    timeout=REQUEST_TIMEOUT,
                )
            else:
                response = session.post(
                    f"{self.url}/api/2.0/mlflow/runs/log-metric",
                    json={"run_id": self.run_id, **metrics[0]},
                    timeout=REQUEST_TIMEOUT,
                )
        except requests.RequestException as exc:
            return type(exc).__name__
        return response.status_code

    # --- what happened ---------------------------------------------------------------------

    def acked_count(self) -> int:
        with self._lock:
            return sum(len(w.acked) for w in self.writers)

    def acks_after(self, moment: float) -> int:
        with self._lock:
            return sum(1 for w in self.writers for t in w.ack_times if t > moment)

    def wait_for_acks(self, count: int, timeout: float, after: float | None = None) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = self.acks_after(after) if after is not None else self.acked_count()
            if done >= count:
                return True
            time.sleep(0.1)
        return False

    def summary(self) -> dict[str, dict]:
        with self._lock:
            return {
                w.key: {
                    "requests": w.requests,
                    "attempted": len(w.attempted),
                    "acked": len(w.acked),
                    "statuses": dict(w.statuses),
                }
                for w in self.writers
            }


def stored_steps(
    url: str, auth: tuple[str, str], run_id: str, key: str, verify: str | bool = True
) -> list[int]:
    """Every stored value of `key` (as steps, value == step), through get-history, paged."""
    url = check_local(url)
    steps: list[int] = []
    token = None
    for _ in range(MAX_HISTORY_PAGES):
        params = {"run_id": run_id, "metric_key": key, "max_results": 5000}
        if token:
            params["page_token"] = token
        response = requests.get(
            f"{url}/api/2.0/mlflow/metrics/get-history",
            params=params,
            auth=auth,
            verify=verify,
            timeout=60,
        )
        response.raise_for_status()
        body = response.json()
        for metric in body.get("metrics", []):
            assert metric["value"] == float(metric["step"]), metric
            steps.append(int(metric["step"]))
        token = body.get("next_page_token")
        if not token:
            return steps
    raise AssertionError(f"get-history of {key} did not end within {MAX_HISTORY_PAGES} pages")


def check_nothing_acknowledged_was_lost(
    load: MetricLoad, exact: bool = False
) -> dict[str, dict[str, int]]:
    """Every acknowledged value is stored once; nothing is stored that was never sent.

    exact: also nothing unacknowledged is stored (for loads where no answer was lost).
    """
    report = {}
    for writer in load.writers:
        stored = stored_steps(load.url, load.auth, load.run_id, writer.key, load.verify)
        duplicates = [s for s, n in Counter(stored).items() if n > 1]
        assert not duplicates, f"{writer.key}: stored twice: {duplicates[:10]}"
        stored_set, acked = set(stored), set(writer.acked)
        lost = sorted(acked - stored_set)
        assert not lost, (
            f"{writer.key}: {len(lost)} of {len(acked)} acknowledged values are not stored, "
            f"e.g. steps {lost[:10]}"
        )
        invented = sorted(stored_set - set(writer.attempted))
        assert not invented, f"{writer.key}: stored values never sent: {invented[:10]}"
        if exact:
            assert len(stored) == len(writer.acked), (
                f"{writer.key}: {len(stored)} stored, {len(writer.acked)} acknowledged"
            )
        report[writer.key] = {"acked": len(acked), "stored": len(stored)}
    return report
