"""Who may do what on a `demo` stack (NO_PERMISSIONS): anonymous callers, plain users, admins.

Real MLflow 3.17 basic-auth behind the project's authorization hook, on PostgreSQL, through
the local runtime. Bob owns an experiment, a run, a metric, an artifact and a registered model;
Alice is another plain user who was granted nothing.
"""

from __future__ import annotations

import secrets
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from tests.stacks import Stack, make_stack

TIMING_TRIES = 15
NOT_AUTHENTICATED = "You are not authenticated"
# What call() verifies each server origin against (demo speaks HTTPS with a CA of its own); the
# module's fixture registers its stack here, since call() is handed bare URLs.
SERVER_CA: dict[str, str | bool] = {}


@dataclass
class Demo:
    stack: Stack
    url: str
    admin: tuple[str, str]
    alice: tuple[str, str]
    bob: tuple[str, str]
    experiment_id: str
    run_id: str
    model: str

    def artifact(self, path: str, experiment_id: str | None = None, run_id: str | None = None):
        return (
            f"{self.url}/api/2.0/mlflow-artifacts/artifacts/"
            f"{experiment_id or self.experiment_id}/{run_id or self.run_id}/artifacts/{path}"
        )


def ok(response: requests.Response) -> dict:
    assert response.status_code == 200, (response.request.url, response.status_code, response.text)
    return response.json() if response.content else {}


def sign_in(url: str, user: tuple[str, str]) -> int:
    """The status of a harmless authenticated request as `user`."""
    return call(
        "GET", f"{url}/api/2.0/mlflow/experiments/search", user, params={"max_results": 1}
    ).status_code


def call(method: str, url: str, auth=None, **kwargs) -> requests.Response:
    parts = urlsplit(url)
    assert parts.hostname == "127.0.0.1"
    verify = SERVER_CA.get(f"{parts.scheme}://{parts.netloc}", True)
    return requests.request(method, url, auth=auth, timeout=30, verify=verify, **kwargs)


@pytest.fixture(scope="module")
def demo():
    home = Path(tempfile.mkdtemp(prefix="mlflow-stack-access-"))
    home.chmod(0o755)  # the unprivileged PostgreSQL user must reach pgdata
    stacks: list[Stack] = []
    stack = make_stack((home, stacks), "demo")
    try:
        stack.invoke("up")
        env = stack.client_env()
        url = env["MLFLOW_TRACKING_URI"]
        SERVER_CA[url] = stack.verify
        admin = (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"])
        users = {}
        for name in ("alice", "bob"):
            users[name] = (name, f"{name}-{secrets.token_urlsafe(12)}")
            ok(
                call(
                    "POST",
                    f"{url}/api/2.0/mlflow/users/create",
                    admin,
                    json={"username": name, "password": users[name][1]},
                )
            )
        bob = users["bob"]
        experiment_id = ok(
            call("POST", f"{url}/api/2.0/mlflow/experiments/create", bob, json={"name": "bobs"})
        )["experiment_id"]
        run_id = ok(
            call(
                "POST",
                f"{url}/api/2.0/mlflow/runs/create",
                bob,
                json={"experiment_id": experiment_id},
            )
        )["run"]["info"]["run_id"]
        ok(
            call(
                "POST",
                f"{url}/api/2.0/mlflow/runs/log-metric",
                bob,
                json={"run_id": run_id, "key": "loss", "value": 0.5, "timestamp": 0, "step": 0},
            )
        )
        model = "bobs-model"
        ok(
            call(
                "POST", f"{url}/api/2.0/mlflow/registered-models/create", bob, json={"name": model}
            )
        )
        demo = Demo(stack, url, admin, users["alice"], bob, experiment_id, run_id, model)
        ok(call("PUT", demo.artifact("notes.txt"), bob, data=b"bob's notes\n"))
        yield demo
    finally:
        stack.invoke("down", check=False)
        stack.kill_everything()
        shutil.rmtree(home, ignore_errors=True)


def route_families(d: Demo) -> list[tuple[str, str, dict]]:
    """One or more routes of every family, each with a body/query that would succeed for an
    admin, so that a 401 comes from authentication and not from a malformed request."""
    u, exp, run = d.url, d.experiment_id, d.run_id
    return [
        # experiments
        ("GET", f"{u}/api/2.0/mlflow/experiments/search", {"params": {"max_results": 1}}),
        ("GET", f"{u}/api/2.0/mlflow/experiments/get", {"params": {"experiment_id": exp}}),
        ("POST", f"{u}/api/2.0/mlflow/experiments/create", {"json": {"name": "anon-exp"}}),
        ("POST", f"{u}/ajax-api/2.0/mlflow/experiments/search", {"json": {"max_results": 1}}),
        # runs
        ("GET", f"{u}/api/2.0/mlflow/runs/get", {"params": {"run_id": run}}),
        ("POST", f"{u}/api/2.0/mlflow/runs/search", {"json": {"experiment_ids": [exp]}}),
        ("POST", f"{u}/api/2.0/mlflow/runs/create", {"json": {"experiment_id": exp}}),
        ("POST", f"{u}/api/2.0/mlflow/runs/delete", {"json": {"run_id": run}}),
        # metrics
        (
            "POST",
            f"{u}/api/2.0/mlflow/runs/log-metric",
            {"json": {"run_id": run, "key": "anon", "value": 1, "timestamp": 0}},
        ),
        (
            "POST",
            f"{u}/api/2.0/mlflow/runs/log-batch",
            {"json": {"run_id": run, "metrics": [{"key": "anon", "value": 1, "timestamp": 0}]}},
        ),
        (
            "GET",
            f"{u}/api/2.0/mlflow/metrics/get-history",
            {"params": {"run_id": run, "metric_key": "loss"}},
        ),
        # artifacts (proxied, and the run-scoped views of them)
        ("GET", d.artifact("notes.txt"), {}),
        ("PUT", d.artifact("anon.txt"), {"data": b"anonymous"}),
        ("DELETE", d.artifact("notes.txt"), {}),
        (
            "GET",
            f"{u}/api/2.0/mlflow-artifacts/artifacts",
            {"params": {"path": f"{exp}/{run}/artifacts"}},
        ),
        ("GET", f"{u}/api/2.0/mlflow/artifacts/list", {"params": {"run_id": run}}),
        ("GET", f"{u}/get-artifact", {"params": {"run_id": run, "path": "notes.txt"}}),
        # registered models
        ("GET", f"{u}/api/2.0/mlflow/registered-models/search", {}),
        ("GET", f"{u}/api/2.0/mlflow/registered-models/get", {"params": {"name": d.model}}),
        ("POST", f"{u}/api/2.0/mlflow/registered-models/create", {"json": {"name": "anon"}}),
        # users and permissions
        ("GET", f"{u}/api/2.0/mlflow/users/list", {}),
        ("GET", f"{u}/api/2.0/mlflow/users/get", {"params": {"username": "bob"}}),
        (
            "POST",
            f"{u}/api/2.0/mlflow/users/create",
            {"json": {"username": "mallory", "password": "mallory-password-1"}},
        ),
        ("DELETE", f"{u}/api/2.0/mlflow/users/delete", {"json": {"username": "bob"}}),
        (
            "PATCH",
            f"{u}/api/2.0/mlflow/users/update-admin",
            {"json": {"username": "alice", "is_admin": True}},
        ),
        (
            "PATCH",
            f"{u}/api/2.0/mlflow/users/update-password",
            {"json": {"username": "bob", "password": "taken-over-password"}},
        ),
        (
            "POST",
            f"{u}/api/3.0/mlflow/users/permissions/grant",
            {
                "json": {
                    "username": "alice",
                    "resource_type": "experiment",
                    "resource_id": exp,
                    "permission": "MANAGE",
                }
            },
        ),
        ("GET", f"{u}/signup", {}),
        (
            "POST",
            f"{u}/api/2.0/mlflow/users/create-ui",
            {"data": {"username": "mallory", "password": "mallory-password-1"}},
        ),
        # the UI itself
        ("GET", f"{u}/", {}),
    ]


def assert_unchanged(d: Demo) -> None:
    """Nothing a rejected caller tried took effect."""
    users = {
        u["username"]: u
        for u in ok(call("GET", f"{d.url}/api/2.0/mlflow/users/list", d.admin))["users"]
    }
    assert set(users) == {d.admin[0], "alice", "bob"}, users
    assert not users["alice"]["is_admin"] and not users["bob"]["is_admin"]
    for user in (d.alice, d.bob):  # both passwords still work
        assert sign_in(d.url, user) == 200, user[0]
    run = ok(call("GET", f"{d.url}/api/2.0/mlflow/runs/get", d.admin, params={"run_id": d.run_id}))
    assert run["run"]["info"]["lifecycle_stage"] == "active"
    assert [m["key"] for m in run["run"]["data"].get("metrics", [])] == ["loss"]
    listed = ok(
        call("GET", f"{d.url}/api/2.0/mlflow/artifacts/list", d.admin, params={"run_id": d.run_id})
    )
    assert [f["path"] for f in listed.get("files", [])] == ["notes.txt"]
    experiments = ok(
        call(
            "GET",
            f"{d.url}/api/2.0/mlflow/experiments/search",
            d.admin,
            params={"max_results": 100},
        )
    )["experiments"]
    assert {e["name"] for e in experiments} == {"Default", "bobs"}
    models = ok(call("GET", f"{d.url}/api/2.0/mlflow/registered-models/search", d.admin))
    assert [m["name"] for m in models.get("registered_models", [])] == [d.model]
    permission = call(
        "GET",
        f"{d.url}/api/3.0/mlflow/users/permissions/get",
        d.admin,
        params={"username": "alice", "resource_type": "experiment", "resource_id": d.experiment_id},
    )
    assert permission.status_code == 200, permission.text
    assert permission.json()["permission"] == "NO_PERMISSIONS", permission.text


# --- authentication ------------------------------------------------------------------------


def test_every_route_family_needs_credentials(demo):
    # Wrong credentials cost a full password hash each: alternate them over the routes.
    wrong = [
        (demo.bob[0], demo.bob[1] + "x"),  # wrong password
        ("nobody", demo.bob[1]),  # unknown user
    ]
    garbage_headers = [
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": "Basic !!!not-base64"},
        {"Authorization": "Digest username=admin"},
    ]
    failures = []
    for number, (method, url, kwargs) in enumerate(route_families(demo)):
        attempts = [{"auth": None}, {"auth": wrong[number % len(wrong)]}]
        attempts += [{"headers": h} for h in garbage_headers]
        for attempt in attempts:
            response = call(method, url, **attempt, **kwargs)
            if response.status_code != 401 or NOT_AUTHENTICATED not in response.text:
                failures.append((method, url, attempt, response.status_code, response.text[:80]))
            elif response.headers.get("WWW-Authenticate") != 'Basic realm="mlflow"':
                failures.append((method, url, attempt, "no Basic challenge"))
    assert not failures, "\n".join(map(str, failures))
    assert_unchanged(demo)


def test_health_tells_anonymous_callers_nothing_but_ok(demo):
    assert call("GET", f"{demo.url}/health").status_code == 200
    # /health says nothing but OK: no version, configuration or user data for anonymous callers.
    assert call("GET", f"{demo.url}/health").text.strip() == "OK"


# --- user management -----------------------------------------------------------------------


def test_non_admins_cannot_manage_users(demo):
    u = demo.url
    attempts = [
        (
            "POST",
            f"{u}/api/2.0/mlflow/users/create",
            {"json": {"username": "mallory", "password": "mallory-password-1"}},
        ),
        (
            "POST",
            f"{u}/api/2.0/mlflow/users/create-ui",
            {"data": {"username": "mallory", "password": "mallory-password-1"}},
        ),
        ("DELETE", f"{u}/api/2.0/mlflow/users/delete", {"json": {"username": "bob"}}),
        (
            "PATCH",
            f"{u}/api/2.0/mlflow/users/update-admin",
            {"json": {"username": "alice", "is_admin": True}},
        ),
        (
            "PATCH",
            f"{u}/api/2.0/mlflow/users/update-admin",
            {"json": {"username": "bob", "is_admin": True}},
        ),
        (
            "PATCH",
            f"{u}/api/2.0/mlflow/users/update-password",
            {"json": {"username": "bob", "password": "taken-over-password"}},
        ),
        ("GET", f"{u}/api/2.0/mlflow/users/get", {"params": {"username": "bob"}}),
        ("GET", f"{u}/signup", {}),
        (
            "POST",
            f"{u}/api/3.0/mlflow/users/permissions/grant",
            {
                "json": {
                    "username": "alice",
                    "resource_type": "experiment",
                    "resource_id": demo.experiment_id,
                    "permission": "MANAGE",
                }
            },
        ),
    ]
    failures = []
    for method, url, kwargs in attempts:
        response = call(method, url, demo.alice, **kwargs)
        if response.status_code != 403:
            failures.append((method, url, kwargs, response.status_code, response.text[:100]))
    assert not failures, "\n".join(map(str, failures))
    assert_unchanged(demo)
    # The same requests are fine for the admin (so the 403s above were about who asked):
    # one harmless example of each kind.
    ok(call("GET", f"{u}/api/2.0/mlflow/users/get", demo.admin, params={"username": "bob"}))
    assert call("GET", f"{u}/signup", demo.admin).status_code == 200


def test_users_list_shows_no_secrets_to_a_non_admin(demo):
    # MLflow 3.17 lets any signed-in user list the roster (reviewer assignment needs it); it must
    # carry nothing beyond names and flags.
    response = call("GET", f"{demo.url}/api/2.0/mlflow/users/list", demo.alice)
    assert response.status_code in (200, 403), response.text
    if response.status_code == 200:
        for user in response.json()["users"]:
            assert set(user) <= {"id", "username", "is_admin", "roles"}, user
        assert demo.bob[1] not in response.text and "scrypt" not in response.text


def test_signup_and_user_creation_are_admin_only(demo):
    u = demo.url
    body = {"username": "carol", "password": "carol-password-12"}
    assert call("GET", f"{u}/signup").status_code == 401
    assert call("GET", f"{u}/signup", demo.alice).status_code == 403
    assert call("POST", f"{u}/api/2.0/mlflow/users/create-ui", data=body).status_code == 401
    assert (
        call("POST", f"{u}/api/2.0/mlflow/users/create-ui", demo.alice, data=body).status_code
        == 403
    )
    assert call("POST", f"{u}/api/2.0/mlflow/users/create", json=body).status_code == 401
    assert call("POST", f"{u}/api/2.0/mlflow/users/create", demo.bob, json=body).status_code == 403
    assert (
        call(
            "GET", f"{u}/api/2.0/mlflow/users/get", demo.admin, params={"username": "carol"}
        ).status_code
        == 404
    )
    signup = call("GET", f"{u}/signup", demo.admin)
    assert signup.status_code == 200 and "<form" in signup.text
    # The admin can, and the new user then signs in.
    ok(call("POST", f"{u}/api/2.0/mlflow/users/create", demo.admin, json=body))
    try:
        assert sign_in(u, ("carol", body["password"])) == 200
    finally:
        ok(
            call(
                "DELETE", f"{u}/api/2.0/mlflow/users/delete", demo.admin, json={"username": "carol"}
            )
        )
    assert sign_in(u, ("carol", body["password"])) == 401


# --- NO_PERMISSIONS isolation --------------------------------------------------------------


def foreign_resource_requests(d: Demo) -> list[tuple[str, str, dict]]:
    """Read and write requests on Bob's experiment, run, artifacts and model."""
    u, exp, run = d.url, d.experiment_id, d.run_id
    return [
        ("GET", f"{u}/api/2.0/mlflow/experiments/get", {"params": {"experiment_id": exp}}),
        (
            "GET",
            f"{u}/api/2.0/mlflow/experiments/get-by-name",
            {"params": {"experiment_name": "bobs"}},
        ),
        (
            "POST",
            f"{u}/api/2.0/mlflow/experiments/update",
            {"json": {"experiment_id": exp, "new_name": "alices"}},
        ),
        ("POST", f"{u}/api/2.0/mlflow/experiments/delete", {"json": {"experiment_id": exp}}),
        ("POST", f"{u}/api/2.0/mlflow/runs/create", {"json": {"experiment_id": exp}}),
        ("GET", f"{u}/api/2.0/mlflow/runs/get", {"params": {"run_id": run}}),
        ("POST", f"{u}/api/2.0/mlflow/runs/update", {"json": {"run_id": run, "status": "FAILED"}}),
        ("POST", f"{u}/api/2.0/mlflow/runs/delete", {"json": {"run_id": run}}),
        (
            "POST",
            f"{u}/api/2.0/mlflow/runs/set-tag",
            {"json": {"run_id": run, "key": "by", "value": "alice"}},
        ),
        (
            "POST",
            f"{u}/api/2.0/mlflow/runs/log-metric",
            {"json": {"run_id": run, "key": "alice", "value": 1, "timestamp": 0}},
        ),
        (
            "POST",
            f"{u}/api/2.0/mlflow/runs/log-batch",
            {"json": {"run_id": run, "metrics": [{"key": "alice", "value": 1, "timestamp": 0}]}},
        ),
        (
            "GET",
            f"{u}/api/2.0/mlflow/metrics/get-history",
            {"params": {"run_id": run, "metric_key": "loss"}},
        ),
        ("GET", d.artifact("notes.txt"), {}),
        ("PUT", d.artifact("alice.txt"), {"data": b"alice was here"}),
        ("PUT", d.artifact("notes.txt"), {"data": b"overwritten by alice"}),
        ("DELETE", d.artifact("notes.txt"), {}),
        (
            "GET",
            f"{u}/api/2.0/mlflow-artifacts/artifacts",
            {"params": {"path": f"{exp}/{run}/artifacts"}},
        ),
        ("GET", f"{u}/api/2.0/mlflow/artifacts/list", {"params": {"run_id": run}}),
        ("GET", f"{u}/get-artifact", {"params": {"run_id": run, "path": "notes.txt"}}),
        ("GET", f"{u}/api/2.0/mlflow/registered-models/get", {"params": {"name": d.model}}),
        (
            "PATCH",
            f"{u}/api/2.0/mlflow/registered-models/update",
            {"json": {"name": d.model, "description": "alice"}},
        ),
        ("DELETE", f"{u}/api/2.0/mlflow/registered-models/delete", {"json": {"name": d.model}}),
    ]


def test_a_user_cannot_touch_another_users_experiment_runs_or_artifacts(demo):
    failures = []
    for method, url, kwargs in foreign_resource_requests(demo):
        response = call(method, url, demo.alice, **kwargs)
        if response.status_code != 403:
            failures.append((method, url, response.status_code, response.text[:100]))
    assert not failures, "\n".join(map(str, failures))
    # Searches do not leak them either.
    experiments = ok(
        call(
            "GET",
            f"{demo.url}/api/2.0/mlflow/experiments/search",
            demo.alice,
            params={"max_results": 100},
        )
    ).get("experiments", [])
    assert "bobs" not in {e["name"] for e in experiments}
    runs = call(
        "POST",
        f"{demo.url}/api/2.0/mlflow/runs/search",
        demo.alice,
        json={"experiment_ids": [demo.experiment_id]},
    )
    assert runs.status_code in (200, 403) and not (
        runs.json() if runs.status_code == 200 else {}
    ).get("runs")
    models = ok(call("GET", f"{demo.url}/api/2.0/mlflow/registered-models/search", demo.alice))
    assert not models.get("registered_models")
    assert_unchanged(demo)
    download = call("GET", demo.artifact("notes.txt"), demo.bob)
    assert download.status_code == 200 and download.content == b"bob's notes\n"


def test_the_owner_can_read_and_write_their_own(demo):
    d, u = demo, demo.url
    ok(
        call(
            "GET",
            f"{u}/api/2.0/mlflow/experiments/get",
            d.bob,
            params={"experiment_id": d.experiment_id},
        )
    )
    ok(call("GET", f"{u}/api/2.0/mlflow/runs/get", d.bob, params={"run_id": d.run_id}))
    ok(
        call(
            "POST",
            f"{u}/api/2.0/mlflow/runs/set-tag",
            d.bob,
            json={"run_id": d.run_id, "key": "by", "value": "bob"},
        )
    )
    history = ok(
        call(
            "GET",
            f"{u}/api/2.0/mlflow/metrics/get-history",
            d.bob,
            params={"run_id": d.run_id, "metric_key": "loss"},
        )
    )
    assert [m["value"] for m in history["metrics"]] == [0.5]
    assert call("GET", d.artifact("notes.txt"), d.bob).content == b"bob's notes\n"
    listed = ok(
        call("GET", f"{u}/api/2.0/mlflow/artifacts/list", d.bob, params={"run_id": d.run_id})
    )
    assert [f["path"] for f in listed["files"]] == ["notes.txt"]
    ok(call("GET", f"{u}/api/2.0/mlflow/registered-models/get", d.bob, params={"name": d.model}))
    searched = ok(
        call("GET", f"{u}/api/2.0/mlflow/experiments/search", d.bob, params={"max_results": 100})
    )
    assert "bobs" in {e["name"] for e in searched["experiments"]}


def test_a_read_grant_lets_read_but_not_write(demo):
    d, u = demo, demo.url
    experiment_id = ok(
        call("POST", f"{u}/api/2.0/mlflow/experiments/create", d.bob, json={"name": "bobs-shared"})
    )["experiment_id"]
    run_id = ok(
        call(
            "POST", f"{u}/api/2.0/mlflow/runs/create", d.bob, json={"experiment_id": experiment_id}
        )
    )["run"]["info"]["run_id"]
    ok(call("PUT", d.artifact("shared.txt", experiment_id, run_id), d.bob, data=b"shared\n"))
    assert (
        call("GET", f"{u}/api/2.0/mlflow/runs/get", d.alice, params={"run_id": run_id}).status_code
        == 403
    )
    ok(
        call(
            "POST",
            f"{u}/api/3.0/mlflow/users/permissions/grant",
            d.admin,
            json={
                "username": "alice",
                "resource_type": "experiment",
                "resource_id": experiment_id,
                "permission": "READ",
            },
        )
    )
    try:
        ok(call("GET", f"{u}/api/2.0/mlflow/runs/get", d.alice, params={"run_id": run_id}))
        assert (
            call("GET", d.artifact("shared.txt", experiment_id, run_id), d.alice).content
            == b"shared\n"
        )
        write = call(
            "POST",
            f"{u}/api/2.0/mlflow/runs/log-metric",
            d.alice,
            json={"run_id": run_id, "key": "alice", "value": 1, "timestamp": 0},
        )
        assert write.status_code == 403
        assert (
            call(
                "PUT", d.artifact("alice.txt", experiment_id, run_id), d.alice, data=b"x"
            ).status_code
            == 403
        )
        # The grant is for that experiment only.
        assert (
            call(
                "GET", f"{u}/api/2.0/mlflow/runs/get", d.alice, params={"run_id": d.run_id}
            ).status_code
            == 403
        )
    finally:
        ok(
            call(
                "POST",
                f"{u}/api/2.0/mlflow/experiments/delete",
                d.bob,
                json={"experiment_id": experiment_id},
            )
        )


# --- timing --------------------------------------------------------------------------------


def test_an_unknown_user_and_a_wrong_password_take_about_as_long(demo):
    url = f"{demo.url}/api/2.0/mlflow/experiments/search"
    wrong_password = (demo.alice[0], "not-alices-password-1")
    unknown_user = (f"nobody-{secrets.token_hex(4)}", "not-alices-password-1")
    timings: dict[str, list[float]] = {"wrong_password": [], "unknown_user": []}
    with requests.Session() as session:
        session.get(
            f"{demo.url}/health", verify=demo.stack.verify, timeout=10
        )  # connection set up outside the timings
        for _ in range(TIMING_TRIES):
            # Interleaved, so a load spike on the machine hits both series alike.
            for kind, auth in (("wrong_password", wrong_password), ("unknown_user", unknown_user)):
                started = time.perf_counter()
                response = session.get(
                    url, params={"max_results": 1}, auth=auth, verify=demo.stack.verify, timeout=30
                )
                timings[kind].append(time.perf_counter() - started)
                assert response.status_code == 401, response.text
        wrong, unknown = (statistics.median(timings[k]) for k in ("wrong_password", "unknown_user"))
        ratio = unknown / wrong
        assert 0.5 <= ratio <= 2.0, (
            f"unknown user {unknown * 1000:.0f} ms vs wrong password {wrong * 1000:.0f} ms "
            f"(median of {TIMING_TRIES}): the username can be probed by timing"
        )
        right = session.get(
            url, params={"max_results": 1}, auth=demo.alice, verify=demo.stack.verify, timeout=30
        )
        assert right.status_code == 200, right.text


# --- Host header ---------------------------------------------------------------------------


def test_a_foreign_host_header_is_refused_and_the_profiles_own_hosts_work(demo):
    port = urlsplit(demo.url).port
    # (route, what an anonymous caller with a foreign Host may get). Flask routes check the
    # Host before authentication. The proxied-artifact routes are native FastAPI routes in
    # MLflow 3.17, whose auth middleware wraps the host check: an anonymous caller gets the
    # 401 first. Either way nothing is served; signed in, it is 403 everywhere.
    routes = [
        (f"{demo.url}/api/2.0/mlflow/experiments/search?max_results=1", {403}),
        (f"{demo.url}/ajax-api/2.0/mlflow/experiments/search?max_results=1", {403}),
        (f"{demo.url}/api/2.0/mlflow/runs/get?run_id={demo.run_id}", {403}),
        (f"{demo.url}/", {403}),
        (demo.artifact("notes.txt"), {401, 403}),
    ]
    foreign = ["evil.example.com", f"evil.example.com:{port}", f"localhost.evil.example.com:{port}"]
    failures = []
    for route, anonymous in routes:
        for host in foreign:
            signed_in = call("GET", route, demo.admin, headers={"Host": host})
            if signed_in.status_code != 403:
                failures.append((route, host, "admin", signed_in.status_code))
            response = call("GET", route, headers={"Host": host})
            if response.status_code not in anonymous:
                failures.append((route, host, "anonymous", response.status_code))
        for host in ("localhost", f"localhost:{port}", "127.0.0.1", f"127.0.0.1:{port}"):
            response = call("GET", route, demo.admin, headers={"Host": host})
            if response.status_code != 200:
                failures.append((route, host, "admin, own host", response.status_code))
    assert not failures, "\n".join(map(str, failures))
