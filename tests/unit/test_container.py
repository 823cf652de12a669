"""What runs inside the MLflow container: the entry point and the database relay, in-process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat

import pytest

from mlflow_stack.container import entrypoint, relay


def test_entrypoint_writes_the_auth_config_privately_and_drops_the_variable(tmp_path, monkeypatch):
    target = tmp_path / "config" / "auth_config.ini"
    content = "[mlflow]\nadmin_password = p%%a$s@w'\"\n"
    monkeypatch.setenv(entrypoint.AUTH_CONFIG_VARIABLE, content)
    monkeypatch.setenv(entrypoint.PATH_VARIABLE, str(target))
    executed = []
    monkeypatch.setattr(os, "execvp", lambda program, argv: executed.append((program, argv)))

    entrypoint.main(["mlflow", "server", "--port", "5000"])

    assert target.read_text() == content
    assert stat.S_IMODE(target.stat().st_mode) == 0o400
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o700
    assert entrypoint.AUTH_CONFIG_VARIABLE not in os.environ
    assert executed == [("mlflow", ["mlflow", "server", "--port", "5000"])]
    assert [p.name for p in target.parent.iterdir()] == ["auth_config.ini"]


def test_entrypoint_replaces_a_config_left_by_an_earlier_start(tmp_path, monkeypatch):
    target = tmp_path / "auth_config.ini"
    target.write_text("old")
    target.chmod(0o400)
    monkeypatch.setenv(entrypoint.AUTH_CONFIG_VARIABLE, "new")
    monkeypatch.setenv(entrypoint.PATH_VARIABLE, str(target))
    monkeypatch.setattr(os, "execvp", lambda program, argv: None)
    entrypoint.main(["true"])
    assert target.read_text() == "new"


def test_entrypoint_without_a_path_is_an_error(monkeypatch):
    monkeypatch.setenv(entrypoint.AUTH_CONFIG_VARIABLE, "[mlflow]")
    monkeypatch.delenv(entrypoint.PATH_VARIABLE, raising=False)
    with pytest.raises(SystemExit, match="MLFLOW_AUTH_CONFIG_PATH is not"):
        entrypoint.main(["mlflow"])


def test_relay_carries_bytes_both_ways_and_exits_when_idle(capsys, monkeypatch):
    # The relay looks for idleness once a second; a shorter look keeps the test under a second.
    real_sleep = asyncio.sleep
    monkeypatch.setattr(asyncio, "sleep", lambda seconds: real_sleep(min(seconds, 0.02)))

    async def scenario() -> bytes:
        async def upper_echo(reader, writer):
            writer.write((await reader.read(100)).upper())
            await writer.drain()
            writer.close()

        target = await asyncio.start_server(upper_echo, "127.0.0.1", 0)
        target_port = target.sockets[0].getsockname()[1]
        with contextlib.closing(socket.socket()) as probe:
            probe.bind(("127.0.0.1", 0))
            listen_port = probe.getsockname()[1]
        serving = asyncio.create_task(relay.serve(listen_port, "127.0.0.1", target_port, 0.2))
        for _ in range(50):
            if relay.READY_LINE in capsys.readouterr().out:
                break
            await asyncio.sleep(0.05)
        reader, writer = await asyncio.open_connection("127.0.0.1", listen_port)
        writer.write(b"scram exchange")
        await writer.drain()
        answer = await reader.read(100)
        writer.close()
        await asyncio.wait_for(serving, timeout=5)  # returns once idle, by itself
        target.close()
        return answer

    assert asyncio.run(scenario()) == b"SCRAM EXCHANGE"
