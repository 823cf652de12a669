#!/usr/bin/env python3
"""Check that a client can reach and use an authenticated MLflow tracking server.

Talks to the server's REST API with plain HTTP (Python standard library plus
``requests``; the MLflow SDK is not needed) and runs, in order:

  1. health check          GET  /health
  2. authentication        GET  /api/2.0/mlflow/experiments/search
  3. create experiment     POST /api/2.0/mlflow/experiments/create
  4. create run            POST /api/2.0/mlflow/runs/create
  5. log params/metrics    POST /api/2.0/mlflow/runs/log-parameter, log-metric, log-batch
  6. finish run            POST /api/2.0/mlflow/runs/update
  7. search runs           POST /api/2.0/mlflow/runs/search   (metric filter)
  8. search experiments    POST /api/2.0/mlflow/experiments/search   (name filter)
  9. clean up              POST /api/2.0/mlflow/experiments/delete

Each step prints one line (``✓ ...``). The first failing step prints
``✗ <step>: <reason>`` and the script exits 1 (the experiment it created, if any,
is still deleted). Exit 0 means every step passed.

Note: MLflow's REST API only soft-deletes experiments (they move to the
"deleted" lifecycle stage and disappear from normal searches; ``mlflow gc`` on
the server side removes them for good). Every run uses a fresh, unique
experiment name (``check-access-<UTC time>-<random>``), so repeated runs never
collide.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import sys
import time
from datetime import UTC, datetime
from typing import Any

try:
    import requests
except ImportError:  # pragma: no cover - depends on the environment
    print("✗ Setup: the 'requests' package is required (pip install requests)", file=sys.stderr)
    sys.exit(1)

DEFAULT_TIMEOUT = 30.0


class StepFailed(Exception):
    """A step did not succeed; ``str()`` is the short reason."""


class BearerAuth(requests.auth.AuthBase):
    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"Bearer {self.token}"
        return r


def _env(name: str) -> str | None:
    return os.environ.get(name) or None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="check_access.py",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Check access to an authenticated MLflow tracking server over its REST API:\n"
            "health, authentication, create an experiment and a run, log params and\n"
            "metrics, finish the run, search runs and experiments, then delete the\n"
            "experiment again. Prints one line per step."
        ),
        epilog="""\
environment variables (used when the matching option is not given):
  MLFLOW_TRACKING_URI        server URL, e.g. https://mlflow.example.org
  MLFLOW_TRACKING_USERNAME   basic-auth user name
  MLFLOW_TRACKING_PASSWORD   basic-auth password
  MLFLOW_TRACKING_TOKEN      bearer token; used only when no username/password
                             is given
  MLFLOW_TRACKING_INSECURE_TLS=true   do not verify the server's TLS certificate
  MLFLOW_TRACKING_SERVER_CERT_PATH    CA bundle to verify the server against

credentials: a username together with a password (HTTP basic auth), or else a
bearer token. Options take precedence over environment variables.

output: one "✓ ..." line per passed step, ending with
  "✓ All tests passed! Token-based access is working correctly."
or, at the first failure, one "✗ <step>: <reason>" line on stderr.

exit status: 0 all steps passed; 1 a step failed, the configuration is
incomplete, or the server cannot be reached; 130 interrupted.

examples:
  check_access.py --url http://127.0.0.1:5000 --username admin --password '...'
  MLFLOW_TRACKING_URI=https://mlflow.example.org MLFLOW_TRACKING_TOKEN=... check_access.py
""",
    )
    parser.add_argument(
        "--url", help="tracking server URL (default: $MLFLOW_TRACKING_URI)", metavar="URL"
    )
    parser.add_argument(
        "--username", help="basic-auth user (default: $MLFLOW_TRACKING_USERNAME)", metavar="NAME"
    )
    parser.add_argument(
        "--password",
        help="basic-auth password (default: $MLFLOW_TRACKING_PASSWORD)",
        metavar="PASSWORD",
    )
    parser.add_argument(
        "--token",
        help="bearer token, used when no username/password is set "
        "(default: $MLFLOW_TRACKING_TOKEN)",
        metavar="TOKEN",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds to wait for each HTTP request (default: {DEFAULT_TIMEOUT:g})",
        metavar="SECONDS",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="do not verify TLS certificates (default: $MLFLOW_TRACKING_INSECURE_TLS)",
    )
    return parser.parse_args(argv)


class Checker:
    def __init__(self, url: str, auth: requests.auth.AuthBase, timeout: float, verify: Any):
        self.url = url.rstrip("/")
        self.auth = auth
        self.timeout = timeout
        self.http = requests.Session()
        self.http.verify = verify

    # -- HTTP ---------------------------------------------------------------

    def _send(self, method: str, path: str, *, auth: Any = None, **kwargs: Any):
        try:
            # verify per request: the session's would lose to REQUESTS_CA_BUNDLE.
            return self.http.request(
                method,
                self.url + path,
                auth=auth,
                timeout=self.timeout,
                verify=self.http.verify,
                **kwargs,
            )
        except requests.exceptions.SSLError as exc:
            raise StepFailed(f"TLS error talking to {self.url}: {_first_line(exc)}") from None
        except requests.exceptions.ConnectTimeout:
            raise StepFailed(f"timed out connecting to {self.url}") from None
        except requests.exceptions.ConnectionError as exc:
            text = str(exc)
            if "Connection refused" in text:
                reason = "connection refused"
            elif "Name or service not known" in text or "getaddrinfo" in text:
                reason = "host name not found"
            else:
                reason = _first_line(exc)
            raise StepFailed(f"cannot connect to {self.url} ({reason})") from None
        except requests.exceptions.Timeout:
            raise StepFailed(f"no answer from {self.url} within {self.timeout:g}s") from None
        except requests.exceptions.RequestException as exc:
            raise StepFailed(f"request failed: {_first_line(exc)}") from None

    def call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        resp = self._send(method, path, auth=self.auth, **kwargs)
        if resp.status_code != 200:
            raise StepFailed(_http_reason(resp))
        if not resp.content:
            return {}
        try:
            data = resp.json()
        except ValueError:
            raise StepFailed(
                f"HTTP 200 but the response is not JSON (is {self.url} an MLflow server?)"
            ) from None
        if not isinstance(data, dict):
            raise StepFailed("unexpected JSON response")
        return data

    # -- steps --------------------------------------------------------------

    def health(self) -> None:
        resp = self._send("GET", "/health", auth=None)
        if resp.status_code != 200:
            raise StepFailed(_http_reason(resp))
        if resp.text.strip() != "OK":
            raise StepFailed(f"unexpected response {resp.text.strip()[:60]!r}")

    def authenticate(self) -> None:
        self.call("GET", "/api/2.0/mlflow/experiments/search", params={"max_results": 1})

    def create_experiment(self, name: str) -> str:
        data = self.call("POST", "/api/2.0/mlflow/experiments/create", json={"name": name})
        exp_id = data.get("experiment_id")
        if not exp_id:
            raise StepFailed("response has no experiment_id")
        return str(exp_id)

    def create_run(self, experiment_id: str, run_name: str) -> str:
        data = self.call(
            "POST",
            "/api/2.0/mlflow/runs/create",
            json={"experiment_id": experiment_id, "run_name": run_name, "start_time": _now_ms()},
        )
        info = data.get("run", {}).get("info", {})
        run_id = info.get("run_id") or info.get("run_uuid")
        if not run_id:
            raise StepFailed("response has no run id")
        return str(run_id)

    def log(self, run_id: str) -> None:
        ts = _now_ms()
        self.call(
            "POST",
            "/api/2.0/mlflow/runs/log-parameter",
            json={"run_id": run_id, "key": "check_param", "value": "ok"},
        )
        self.call(
            "POST",
            "/api/2.0/mlflow/runs/log-metric",
            json={
                "run_id": run_id,
                "key": "check_metric",
                "value": 1.0,
                "timestamp": ts,
                "step": 0,
            },
        )
        self.call(
            "POST",
            "/api/2.0/mlflow/runs/log-batch",
            json={
                "run_id": run_id,
                "params": [{"key": "check_batch_param", "value": "ok"}],
                "metrics": [
                    {"key": "check_batch_metric", "value": 2.0, "timestamp": ts, "step": 0}
                ],
            },
        )

    def finish_run(self, run_id: str) -> None:
        self.call(
            "POST",
            "/api/2.0/mlflow/runs/update",
            json={"run_id": run_id, "status": "FINISHED", "end_time": _now_ms()},
        )

    def search_runs(self, experiment_id: str, run_id: str) -> int:
        runs = self.call(
            "POST",
            "/api/2.0/mlflow/runs/search",
            json={
                "experiment_ids": [experiment_id],
                "filter": "metrics.check_metric > 0.5",
                "max_results": 10,
            },
        ).get("runs", [])
        if run_id not in [r.get("info", {}).get("run_id") for r in runs]:
            raise StepFailed(f"run {run_id} not found by filter 'metrics.check_metric > 0.5'")
        return len(runs)

    def search_experiments(self, name: str, experiment_id: str) -> None:
        found = self.call(
            "POST",
            "/api/2.0/mlflow/experiments/search",
            json={"filter": f"name = '{name}'", "max_results": 10},
        ).get("experiments", [])
        if experiment_id not in [e.get("experiment_id") for e in found]:
            raise StepFailed(f"experiment {name!r} not found by name")

    def delete_experiment(self, experiment_id: str) -> None:
        self.call(
            "POST", "/api/2.0/mlflow/experiments/delete", json={"experiment_id": experiment_id}
        )


def _now_ms() -> int:
    return int(time.time() * 1000)


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:160] + ("..." if len(text) > 160 else "")


def _http_reason(resp: requests.Response) -> str:
    if resp.status_code == 401:
        return "HTTP 401 Unauthorized (wrong username/password or invalid token)"
    if resp.status_code == 403:
        return "HTTP 403 Forbidden (the user lacks permission for this)"
    detail = ""
    try:
        body = resp.json()
        if isinstance(body, dict):
            detail = " ".join(str(body.get(k, "")) for k in ("error_code", "message")).strip()
    except ValueError:
        text = resp.text.strip()
        # A plain-text error is worth showing; an HTML page (proxy, wrong URL) is not.
        detail = "" if text.lower().startswith(("<!doctype", "<html")) else text
    detail = " ".join(detail.split())[:160]
    reason = f"HTTP {resp.status_code} {resp.reason or ''}".strip()
    return f"{reason}: {detail}" if detail else reason


def _ok(message: str) -> None:
    print(f"✓ {message}", flush=True)


def _fail(step: str, reason: str) -> int:
    sys.stdout.flush()
    print(f"✗ {step}: {reason}", file=sys.stderr, flush=True)
    return 1


def run(args: argparse.Namespace) -> int:
    url = args.url or _env("MLFLOW_TRACKING_URI")
    if not url:
        return _fail("Configuration", "no server URL (pass --url or set MLFLOW_TRACKING_URI)")
    if not url.startswith(("http://", "https://")):
        return _fail("Configuration", f"URL must start with http:// or https://, got {url!r}")
    username = args.username or _env("MLFLOW_TRACKING_USERNAME")
    password = args.password or _env("MLFLOW_TRACKING_PASSWORD")
    token = args.token or _env("MLFLOW_TRACKING_TOKEN")
    if username and password:
        auth: requests.auth.AuthBase = requests.auth.HTTPBasicAuth(username, password)
        who = f"as user {username!r}"
    elif username or password:
        return _fail(
            "Configuration",
            "give both a username and a password "
            "(--username/--password or MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD)",
        )
    elif token:
        auth = BearerAuth(token)
        who = "with a bearer token"
    else:
        return _fail(
            "Configuration",
            "no credentials (pass --username/--password or --token, or set "
            "MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD or MLFLOW_TRACKING_TOKEN)",
        )
    if args.timeout <= 0:
        return _fail("Configuration", "--timeout must be positive")
    verify: Any = True
    if args.insecure or (_env("MLFLOW_TRACKING_INSECURE_TLS") or "").lower() in ("1", "true"):
        verify = False
        import urllib3

        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    elif _env("MLFLOW_TRACKING_SERVER_CERT_PATH"):
        verify = _env("MLFLOW_TRACKING_SERVER_CERT_PATH")

    checker = Checker(url, auth, args.timeout, verify)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"check-access-{stamp}-{secrets.token_hex(3)}"
    experiment_id: str | None = None
    step = "Health check"
    try:
        checker.health()
        _ok("Health check passed")

        step = "Authentication"
        checker.authenticate()
        _ok(f"Authenticated {who}")

        step = "Create experiment"
        experiment_id = checker.create_experiment(name)
        _ok(f"Created experiment with ID: {experiment_id} ({name})")

        step = "Create run"
        run_id = checker.create_run(experiment_id, f"{name}-run")
        _ok(f"Created run with ID: {run_id}")

        step = "Log parameters and metrics"
        checker.log(run_id)
        _ok("Logged parameters and metrics")

        step = "Finish run"
        checker.finish_run(run_id)
        _ok("Finished run")

        step = "Search runs"
        count = checker.search_runs(experiment_id, run_id)
        _ok(f"Found run via search ({count} result{'s' if count != 1 else ''})")

        step = "Search experiments"
        checker.search_experiments(name, experiment_id)
        _ok("Found experiment via search")

        step = "Clean up"
        checker.delete_experiment(experiment_id)
        experiment_id = None
        _ok(f"Cleaned up (deleted experiment {name})")
    except StepFailed as exc:
        code = _fail(step, str(exc))
        if experiment_id is not None:
            try:
                checker.delete_experiment(experiment_id)
            except StepFailed as cleanup_exc:
                print(
                    f"  (could not delete experiment {experiment_id}: {cleanup_exc})",
                    file=sys.stderr,
                )
        return code
    _ok("All tests passed! Token-based access is working correctly.")
    return 0


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):
        # never die on a terminal that cannot print ✓/✗
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(errors="replace")  # type: ignore[union-attr]
    args = parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        print("✗ Interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        return _fail("Unexpected error", f"{type(exc).__name__}: {_first_line(exc)}")


if __name__ == "__main__":
    sys.exit(main())
