"""uvicorn's access log reaches the server's stdout in batches (mlflow_stack/auth/access_log.py),
seen from the reading end of a real pipe, as supervisord sees it."""

from __future__ import annotations

import contextlib
import logging
import os
import select
import time
from collections.abc import Iterator

import pytest

from mlflow_stack.auth.access_log import BatchedStream, batch_access_log


@pytest.fixture
def pipe() -> Iterator[tuple[int, object]]:
    read_end, write_end = os.pipe()
    writer = os.fdopen(write_end, "w")
    yield read_end, writer
    os.close(read_end)
    with contextlib.suppress(OSError):
        writer.close()


def readable(fd: int, timeout: float = 0.0) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


def reads_until_quiet(fd: int) -> list[bytes]:
    """What the reader gets, one os.read at a time, until nothing more arrives."""
    chunks = []
    while readable(fd, 0.2):
        chunks.append(os.read(fd, 1 << 20))
    return chunks


@pytest.fixture
def access_logger(pipe, request) -> Iterator[tuple[logging.Logger, int]]:
    read_end, writer = pipe
    logger = logging.getLogger(f"test.access.{request.node.name}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = logging.StreamHandler(writer)
    logger.addHandler(handler)
    yield logger, read_end
    for stream in [handler.stream] if isinstance(handler.stream, BatchedStream) else []:
        stream.close()
    logger.removeHandler(handler)


def test_requests_lines_reach_the_reader_in_one_write_not_one_each(access_logger):
    logger, read_end = access_logger
    (stream,) = batch_access_log(logger.name)
    for number in range(50):
        logger.info('127.0.0.1:5000 - "GET /health HTTP/1.1" 200 %d', number)
    # Without batching every line would already be in the pipe: the reader wakes per request.
    assert not readable(read_end)
    stream.drain()
    chunks = reads_until_quiet(read_end)
    assert len(chunks) == 1
    lines = b"".join(chunks).decode().splitlines()
    assert lines == [f'127.0.0.1:5000 - "GET /health HTTP/1.1" 200 {n}' for n in range(50)]


def test_a_quiet_server_still_writes_its_last_lines_within_the_interval(pipe):
    read_end, writer = pipe
    stream = BatchedStream(writer, interval=0.05)
    try:
        stream.write("one line\n")
        deadline = time.monotonic() + 5
        while not readable(read_end, 0.05):
            assert time.monotonic() < deadline, "the drain thread never wrote the line"
        assert os.read(read_end, 1024) == b"one line\n"
    finally:
        stream.close()


def test_a_full_batch_is_written_at_once(pipe):
    read_end, writer = pipe
    stream = BatchedStream(writer, interval=60, batch_bytes=100)
    try:
        stream.write("x" * 60)
        assert not readable(read_end)
        stream.write("y" * 60)
        assert readable(read_end)
        assert os.read(read_end, 1024) == b"x" * 60 + b"y" * 60
    finally:
        stream.close()


def test_close_writes_what_is_pending(pipe):
    read_end, writer = pipe
    stream = BatchedStream(writer, interval=60)
    stream.write("last words\n")
    stream.close()
    assert os.read(read_end, 1024) == b"last words\n"


def test_a_reader_that_went_away_does_not_fail_the_request():
    read_end, write_end = os.pipe()
    writer = os.fdopen(write_end, "w")
    stream = BatchedStream(writer, interval=60)
    os.close(read_end)
    stream.write("nobody reads this\n")
    stream.drain()  # the write's BrokenPipeError stays inside
    stream.close()
    with contextlib.suppress(OSError):
        writer.close()


def test_file_handlers_and_already_batched_streams_are_left_alone(tmp_path, access_logger):
    logger, _ = access_logger
    file_handler = logging.FileHandler(tmp_path / "access.log")
    logger.addHandler(file_handler)
    try:
        first = batch_access_log(logger.name)
        assert len(first) == 1
        assert file_handler.stream.__class__ is not BatchedStream
        assert batch_access_log(logger.name) == []  # create_app ran twice in one process
    finally:
        logger.removeHandler(file_handler)
        file_handler.close()
