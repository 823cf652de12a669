"""The audit log on a real stack (local runtime, demo profile, 1 worker): each change and each
failed authentication once, with the right user and outcome, no secret in the file, and the
log intact across a restart and a kill -9 of the server."""

from __future__ import annotations

import json
import os
import signal

import requests

from mlflow_stack.files import parse_env_file
from tests.integration.test_faults import mlflow_pid, wait_for_new_healthy_mlflow
from tests.stacks import Stack

EXPERIMENTS = "/api/2.0/mlflow/experiments"


def url(stack: Stack) -> str:
    return stack.url


def audit(stack: Stack, *flags: str) -> list[dict]:
    printed = stack.invoke("audit", "--json", *flags).stdout
    return [json.loads(line) for line in printed.splitlines() if line.strip()]


def call(stack: Stack, path: str, auth, body: dict) -> requests.Response:
    headers = {"Authorization": f"Bearer {auth}"} if isinstance(auth, str) else {}
    return requests.post(
        url(stack) + path,
        json=body,
        auth=None if isinstance(auth, str) else auth,
        headers=headers,
        verify=stack.verify,
        timeout=30,
    )


def test_changes_and_failed_logins_appear_once_with_user_and_outcome(demo):
    env = demo.client_env()
    admin = (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"])
    created = call(demo, f"{EXPERIMENTS}/create", admin, {"name": "audited"})
    experiment_id = created.json()["experiment_id"]
    call(demo, f"{EXPERIMENTS}/update", admin, {"experiment_id": experiment_id, "new_name": "re"})
    run = call(demo, "/api/2.0/mlflow/runs/create", admin, {"experiment_id": experiment_id})
    run_id = run.json()["run"]["info"]["run_id"]
    logged = call(
        demo,
        "/api/2.0/mlflow/runs/log-metric",
        admin,
        {"run_id": run_id, "key": "loss", "value": 0.5, "timestamp": 1, "step": 0},
    )
    assert logged.status_code == 200, logged.text
    demo.invoke("users.add", "--user", "audra", stdin="")
    demo.invoke("perms.grant", "--user", "audra", "--experiment", experiment_id, "--level", "READ")
    token = json.loads(demo.invoke("tokens.create", "--user", "audra", "--json").stdout)
    as_token = call(demo, f"{EXPERIMENTS}/delete", token["token"], {"experiment_id": experiment_id})
    assert as_token.status_code == 403
    demo.invoke("tokens.revoke", "--token-id", str(token["id"]))
    revoked = call(demo, f"{EXPERIMENTS}/create", token["token"], {"name": "nope"})
    wrong = call(demo, f"{EXPERIMENTS}/create", (admin[0], "not-the-password"), {"name": "no"})
    assert revoked.status_code == wrong.status_code == 401
    call(demo, f"{EXPERIMENTS}/delete", admin, {"experiment_id": experiment_id})

    records = audit(demo)

    def one(route_end: str, **fields) -> dict:
        found = [
            r
            for r in records
            if r["route"].endswith(route_end) and all(r.get(k) == v for k, v in fields.items())
        ]
        assert len(found) == 1, (route_end, fields, found)
        return found[0]

    assert one("experiments/create", name="audited")["user"] == admin[0]
    assert one("experiments/update", new_name="re")["outcome"] == "ok"
    assert one("runs/log-metric", run_id=run_id)["key"] == "loss"
    [grant] = [r for r in records if "permissions" in r["route"] and r.get("username") == "audra"]
    assert grant["user"] == admin[0] and grant["outcome"] == "ok"
    assert one("tokens.create", token_id=str(token["id"]))["user"] == "audra"
    assert one("tokens.revoke", token_id=str(token["id"]))["outcome"] == "ok"
    denied = one("experiments/delete", user="audra")
    assert denied["outcome"] == "denied" and denied["token_id"] == str(token["id"])
    assert denied["auth"] == "token"
    assert one("experiments/create", name="nope")["outcome"] == "unauthenticated"
    failed_login = one("experiments/create", name="no")
    assert failed_login["user"] == admin[0] and failed_login["auth"] == "password"
    assert one("experiments/delete", user=admin[0])["outcome"] == "ok"
    # The filters of `invoke audit`.
    assert {r["outcome"] for r in audit(demo, "--failed")} <= {"denied", "unauthenticated"}
    assert all(r["user"] == "audra" for r in audit(demo, "--user", "audra"))
    assert audit(demo, "--since", "2h") and not audit(demo, "--since", "2030-01-01T00:00")

    text = "".join(p.read_text() for p in (demo.state_dir / "logs").glob("audit.jsonl*"))
    secrets = parse_env_file(demo.state_dir / "secrets.env")
    for secret in [*secrets.values(), token["token"], "not-the-password"]:
        assert secret not in text


def test_the_log_survives_a_restart_and_a_kill_of_the_server(demo):
    env = demo.client_env()
    admin = (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"])
    call(demo, f"{EXPERIMENTS}/create", admin, {"name": "before-restart"})
    demo.invoke("restart", "--service", "mlflow")
    call(demo, f"{EXPERIMENTS}/create", admin, {"name": "before-kill"})
    server = mlflow_pid(demo)
    # The supervisor brings a killed server back by itself.
    os.kill(server, signal.SIGKILL)
    wait_for_new_healthy_mlflow(demo, server)
    call(demo, f"{EXPERIMENTS}/create", admin, {"name": "after-kill"})
    names = [r.get("name") for r in audit(demo) if r["route"].endswith("experiments/create")]
    assert {"before-restart", "before-kill", "after-kill"} <= set(names)


def test_changes_fastapi_serves_itself_are_audited_too(demo):
    """Artifact uploads (and OTLP traces, jobs, the gateway) never reach Flask: audit_native."""
    env = demo.client_env()
    admin = (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"])
    created = call(demo, f"{EXPERIMENTS}/create", admin, {"name": "native-audited"})
    experiment_id = created.json()["experiment_id"]
    run = call(demo, "/api/2.0/mlflow/runs/create", admin, {"experiment_id": experiment_id})
    run_id = run.json()["run"]["info"]["run_id"]
    route = f"/api/2.0/mlflow-artifacts/artifacts/{experiment_id}/{run_id}/artifacts/native.txt"
    uploads = {}
    for label, auth in (("ok", admin), ("refused", (admin[0], "not-the-password-2"))):
        uploads[label] = requests.put(
            url(demo) + route, data=b"bytes\n", auth=auth, verify=demo.verify, timeout=30
        )
    assert uploads["ok"].status_code == 200, uploads["ok"].text
    assert uploads["refused"].status_code == 401
    lines = [r for r in audit(demo) if r["route"] == route]
    assert [(r["method"], r["user"], r["auth"], r["outcome"]) for r in lines] == [
        ("PUT", admin[0], "password", "ok"),
        ("PUT", admin[0], "password", "unauthenticated"),
    ]
    # A download is a read: no line.
    got = requests.get(url(demo) + route, auth=admin, verify=demo.verify, timeout=30)
    assert got.content == b"bytes\n"
    assert len([r for r in audit(demo) if r["route"] == route]) == 2
