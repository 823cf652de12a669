"""A TCP relay run in a short-lived container of the stack: the host reaches PostgreSQL through it.

usage: python -m mlflow_stack.container.relay LISTEN_PORT TARGET_HOST TARGET_PORT IDLE_SECONDS

The compose stacks of `ci` and `demo` do not publish PostgreSQL. The `db.*` and `tokens.*` tasks
start this relay in a container on the stack's network with an ephemeral port published on the
host's loopback only (like `kubectl port-forward`), use it, and remove the container. It prints
READY_LINE once listening, and exits by itself after IDLE_SECONDS without an open connection,
so a task that was killed leaves nothing running for long. It never sees a password in clear:
libpq's scram exchange passes through it untouched.
"""

from __future__ import annotations

import asyncio
import sys

READY_LINE = "relay ready"


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def serve(listen_port: int, target_host: str, target_port: int, idle_seconds: float) -> None:
    open_connections = 0
    last_activity = asyncio.get_running_loop().time()

    async def relay(
        client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        nonlocal open_connections, last_activity
        open_connections += 1
        try:
            server_reader, server_writer = await asyncio.open_connection(target_host, target_port)
        except OSError:
            client_writer.close()
        else:
            await asyncio.gather(
                _pipe(client_reader, server_writer), _pipe(server_reader, client_writer)
            )
        finally:
            open_connections -= 1
            last_activity = asyncio.get_running_loop().time()

    server = await asyncio.start_server(relay, "0.0.0.0", listen_port)  # noqa: S104
    print(READY_LINE, flush=True)
    async with server:
        while True:
            await asyncio.sleep(1)
            idle = asyncio.get_running_loop().time() - last_activity
            if open_connections == 0 and idle > idle_seconds:
                return


def main(argv: list[str]) -> None:
    if len(argv) != 4:
        sys.exit("usage: python -m mlflow_stack.container.relay PORT HOST PORT IDLE_SECONDS")
    asyncio.run(serve(int(argv[0]), argv[1], int(argv[2]), float(argv[3])))


if __name__ == "__main__":
    main(sys.argv[1:])
