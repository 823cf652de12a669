"""The audit volume from outside the server (compose): `invoke audit` reads it, and the tasks
that bypass the server (tokens.*) add their lines to it, through a one-off container.

usage: python -m mlflow_stack.container.audit_log dump [--follow]
       python -m mlflow_stack.container.audit_log append   (JSON objects on stdin, one a line)
The file and its rotation come from the same MLFLOW_STACK_AUDIT_* variables as the server's.
"""

from __future__ import annotations

import dataclasses
import json
import sys

from mlflow_stack.auth import audit


def main(argv: list[str]) -> int:
    settings = audit.Settings.from_environment()
    if settings is None or not argv or argv[0] not in ("dump", "append"):
        print(__doc__, file=sys.stderr)
        return 2
    if argv[0] == "append":
        # A task's line: into the volume only (the container's log stream is the server's).
        log = audit.AuditFile(dataclasses.replace(settings, to_stdout=False))
        for line in sys.stdin:
            if line.strip():
                log.append(json.loads(line))
        log.close()
        return 0
    records = (
        audit.follow_records(settings.path)
        if "--follow" in argv[1:]
        else audit.read_records(settings.path)
    )
    try:
        for record in records:
            sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
            sys.stdout.flush()
    except (KeyboardInterrupt, BrokenPipeError):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
