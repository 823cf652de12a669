"""The body of `invoke audit`, and the audit lines of tasks that change state without the server."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from mlflow_stack.auth import audit
from mlflow_stack.cli.output import print_table
from mlflow_stack.cli.stack import existing_runtime
from mlflow_stack.errors import StackError
from mlflow_stack.profile import Profile, load_profile

SINCE = re.compile(r"([1-9][0-9]{0,5})([dhms])")
SINCE_UNITS = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
COLUMNS = ("TIME", "USER", "AUTH", "METHOD", "ROUTE", "STATUS", "OUTCOME", "CLIENT", "RESOURCE")


def parse_since(text: str | None, now: datetime | None = None) -> datetime | None:
    """`2h`, `30m`, `7d`, `90s` ago, or an ISO time (UTC unless it says otherwise)."""
    if text is None or not str(text).strip():
        return None
    text = str(text).strip()
    now = now or datetime.now(UTC)
    match = SINCE.fullmatch(text)
    if match:
        return now - timedelta(**{SINCE_UNITS[match[2]]: int(match[1])})
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise StackError(
            f"invalid --since {text!r}: a duration such as 2h, 30m or 7d, or an ISO time "
            "such as 2026-12-01T09:00"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _time_of(record: dict[str, Any]) -> datetime | None:
    try:
        return datetime.fromisoformat(str(record.get("ts", "")).replace("Z", "+00:00"))
    except ValueError:
        return None


def matching(
    records: Iterable[dict[str, Any]],
    user: str | None = None,
    since: datetime | None = None,
    failed: bool = False,
) -> Iterator[dict[str, Any]]:
    for record in records:
        if user is not None and record.get("user") != user:
            continue
        if failed and record.get("outcome") == "ok":
            continue
        if since is not None:
            moment = _time_of(record)
            if moment is None or moment < since:
                continue
        yield record


def _resource(record: dict[str, Any]) -> str:
    return " ".join(
        f"{key}={value}"
        for key, value in record.items()
        if key in audit.RESOURCE_FIELDS or key == "token_id"
    )


def _row(record: dict[str, Any]) -> list[str]:
    return [
        str(record.get("ts", "")),
        str(record.get("user") or "-"),
        str(record.get("auth") or "-"),
        str(record.get("method", "")),
        str(record.get("route", "")),
        str(record.get("status", "")),
        str(record.get("outcome", "")),
        str(record.get("client") or "-"),
        _resource(record),
    ]


def show(
    profile_name: str,
    user: str | None = None,
    since: str | None = None,
    failed: bool = False,
    follow: bool = False,
    as_json: bool = False,
    runtime: str = "auto",
) -> None:
    profile = load_profile(profile_name)
    since_time = parse_since(since)
    if not profile.audit_log:
        raise StackError(f"profile {profile.name} keeps no audit log (audit_log = false)")
    stack = existing_runtime(profile, runtime)
    records = matching(stack.audit_records(follow), user, since_time, failed)
    if as_json or follow:
        for record in records:
            print(json.dumps(record, ensure_ascii=False), flush=True)
        return
    rows = [_row(record) for record in records]
    if not rows:
        print("no audit records match")
        return
    print_table(list(COLUMNS), rows)


def record_task(profile: Profile, record: dict[str, Any]) -> None:
    """An audit line for a change a task made without the server (tokens.create, …)."""
    if not profile.audit_log:
        return
    existing_runtime(profile).record_audit(
        {"ts": audit.now_iso(), "via": "invoke", "outcome": "ok", **record}
    )
