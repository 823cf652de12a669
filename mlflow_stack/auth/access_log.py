"""uvicorn's access log, written in batches instead of one write per request.

Each access line went to the server's stdout as it was logged: a write to a pipe that woke the
process reading it (supervisord in the local runtime, the container runtime's log driver under
compose) once per request: supervisord spent about 80 µs of CPU per request on it, where a
whole artifact download costs the server 2-3 ms. Here the lines are collected and written
together at most every FLUSH_SECONDS (or at once when BATCH_BYTES have gathered), so the reader
wakes a few times a second at most.

The lines and their order are unchanged; a line shows up at most FLUSH_SECONDS late. A
process killed outright loses the lines of its last interval: the access log is for reading,
while the audit log (mlflow_stack/auth/audit.py), which records every change, still writes
each line before its response.
"""

from __future__ import annotations

import atexit
import logging
import threading
from typing import TextIO

ACCESS_LOGGER = "uvicorn.access"
FLUSH_SECONDS = 0.5
BATCH_BYTES = 64 * 1024


class BatchedStream:
    """A text stream for a logging.StreamHandler that passes its writes on in batches.

    ``flush()`` is what the handler calls after every record, so it does nothing; ``drain()``
    passes the batch on, from a daemon thread every ``interval`` seconds, from ``write`` once
    the batch holds ``batch_bytes``, and at interpreter exit."""

    def __init__(
        self, target: TextIO, interval: float = FLUSH_SECONDS, batch_bytes: int = BATCH_BYTES
    ) -> None:
        self.target = target
        self.interval = interval
        self.batch_bytes = batch_bytes
        self._pending: list[str] = []
        self._size = 0
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._drainer = threading.Thread(
            target=self._drain_periodically, name="access-log-drain", daemon=True
        )
        self._drainer.start()
        atexit.register(self.close)

    def write(self, text: str) -> int:
        with self._lock:
            self._pending.append(text)
            self._size += len(text)
            full = self._size >= self.batch_bytes
        if full:
            self.drain()
        return len(text)

    def flush(self) -> None:
        """Called by the handler after each record: the batch waits for ``drain``."""

    def drain(self) -> None:
        with self._lock:
            if not self._pending:
                return
            batch = "".join(self._pending)
            self._pending.clear()
            self._size = 0
            # Under the lock, so two drains cannot reorder their batches.
            try:
                self.target.write(batch)
                self.target.flush()
            except (OSError, ValueError):
                # The reader is gone (a closed pipe) or the stream is closed at exit: the
                # lines have nowhere to go, and the request that logged them must not fail.
                pass

    def close(self) -> None:
        self._stopped.set()
        self.drain()

    def _drain_periodically(self) -> None:
        while not self._stopped.wait(self.interval):
            self.drain()


def batch_access_log(logger_name: str = ACCESS_LOGGER) -> list[BatchedStream]:
    """Give every plain stream handler of the access logger (stdout under MLflow's log config)
    a BatchedStream in front of its stream. File handlers are left as they are: a write to a
    file wakes nobody. Returns the streams it put in place."""
    batched: list[BatchedStream] = []
    for handler in logging.getLogger(logger_name).handlers:
        if type(handler) is not logging.StreamHandler:
            continue
        if isinstance(handler.stream, BatchedStream):  # create_app ran twice in this process
            continue
        stream = BatchedStream(handler.stream)
        handler.setStream(stream)
        batched.append(stream)
    return batched
