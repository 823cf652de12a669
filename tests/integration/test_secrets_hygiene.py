"""Secrets stay where they belong: in 0600 files and in the server's environment, nowhere else.

One `ci` stack goes through a whole life (up, a run, a login, failed logins, status, logs,
db.probe, down) while a sampler records the command line of every process on the machine,
including short-lived ones such as initdb, pg_ctl or psql. Then nothing that a person or another
user of the machine can read (command lines, log files, task output) may hold a secret in any
of the forms it travels in (plain, URL-quoted, INI-escaped, JSON-escaped, or inside a Basic
Authorization header).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import stat
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from mlflow_stack import paths
from mlflow_stack.files import parse_env_file
from mlflow_stack.render import urlquote
from tests.stacks import Stack, make_stack

SECRET_FILES = (
    "secrets.env",
    "docker-compose.yml",
    "auth_config.ini",
    "local/auth_config.ini",
    "local/mlflow.env",
)
SAMPLE_INTERVAL = 0.02
SAMPLER_MAX_SECONDS = 300.0


class CommandLineSampler:
    """Records every distinct /proc/*/cmdline seen while it runs (bounded in time)."""

    def __init__(self) -> None:
        self.seen: dict[bytes, int] = {}
        self.scans = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CommandLineSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def scan(self) -> None:
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as fh:
                    cmdline = fh.read()
            except OSError:
                continue
            if cmdline and cmdline not in self.seen:
                self.seen[cmdline] = int(entry.name)
        self.scans += 1

    def _run(self) -> None:
        deadline = time.monotonic() + SAMPLER_MAX_SECONDS
        while not self._stop.is_set() and time.monotonic() < deadline:
            self.scan()
            self._stop.wait(SAMPLE_INTERVAL)


@dataclass
class Life:
    stack: Stack
    secrets: dict[str, str]
    forms: dict[str, bytes] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    cmdlines: dict[bytes, int] = field(default_factory=dict)
    modes: dict[str, int] = field(default_factory=dict)
    private_files_with_secrets: list[str] = field(default_factory=list)
    scans: int = 0


def encodings(name: str, value: str) -> dict[str, bytes]:
    """The forms a secret takes in the files and headers of the stack."""
    forms = {
        f"{name}": value,
        f"{name} (URL-quoted)": urlquote(value),
        f"{name} (INI-escaped)": value.replace("%", "%%"),
        f"{name} (JSON-escaped)": json.dumps(value, ensure_ascii=False)[1:-1],
    }
    return {label: form.encode() for label, form in forms.items()}


def basic_header(username: str, password: str) -> bytes:
    return base64.b64encode(f"{username}:{password}".encode())


def find_forms(data: bytes, forms: dict[str, bytes]) -> list[str]:
    return [label for label, form in forms.items() if form in data]


def files_holding_secrets(state_dir: Path, forms: dict[str, bytes]) -> dict[str, int]:
    """Every file of the stack's folder (not PostgreSQL's own) that holds a secret: its mode."""
    found = {}
    for path in state_dir.rglob("*"):
        relative = path.relative_to(state_dir)
        if relative.parts[0] in ("pgdata", "pgsocket") or not path.is_file():
            continue
        if find_forms(path.read_bytes(), forms):
            found[str(relative)] = stat.S_IMODE(path.stat().st_mode)
    return found


@pytest.fixture(scope="module")
def life():
    home = Path(tempfile.mkdtemp(prefix="mlflow-stack-secrets-"))
    home.chmod(0o755)  # the unprivileged PostgreSQL user must reach pgdata
    stacks: list[Stack] = []
    stack = make_stack((home, stacks), "ci")
    try:
        with CommandLineSampler() as sampler:
            outputs = {}

            def run(*args: str) -> None:
                result = stack.invoke(*args)
                outputs[" ".join(args)] = result.stdout + result.stderr

            run("up")
            values = parse_env_file(stack.state_dir / "secrets.env")
            env = stack.client_env()
            url = env["MLFLOW_TRACKING_URI"]
            admin = env["MLFLOW_TRACKING_USERNAME"]
            # Activity: a run through the SDK (logs in as the admin), failed logins.
            stack.sdk("log", "hygiene", env=env)
            tried = f"tried-{secrets.token_urlsafe(12)}"
            for user in (admin, "nobody"):
                response = requests.get(
                    f"{url}/api/2.0/mlflow/experiments/search",
                    params={"max_results": 1},
                    auth=(user, tried),
                    verify=env.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or True,
                    timeout=30,
                )
                assert response.status_code == 401
            run("status")
            run("logs", "--tail", "100000")
            run("db.probe")
            modes = {
                name: stat.S_IMODE((stack.state_dir / name).stat().st_mode) for name in SECRET_FILES
            }
            run("down")
            sampler.scan()  # one last look after down
        forms: dict[str, bytes] = {}
        for name, value in values.items():
            assert len(value) >= 12, f"{name} is too short to search for reliably"
            forms.update(encodings(name, value))
        forms["admin Basic header"] = basic_header(admin, values["MLFLOW_STACK_ADMIN_PASSWORD"])
        # A password someone tried is a secret too (often a typo of the real one).
        forms.update(encodings("tried password", tried))
        for user in (admin, "nobody"):
            forms[f"Basic header of {user} (tried)"] = basic_header(user, tried)
        yield Life(
            stack=stack,
            secrets=values,
            forms=forms,
            outputs=outputs,
            cmdlines=dict(sampler.seen),
            modes=modes,
            private_files_with_secrets=sorted(files_holding_secrets(stack.state_dir, forms)),
            scans=sampler.scans,
        )
    finally:
        stack.invoke("down", check=False)
        stack.kill_everything()
        shutil.rmtree(home, ignore_errors=True)


def test_the_secrets_are_the_ones_the_stack_uses(life):
    # Guards the other tests: they search for values that really are in use.
    assert set(life.secrets) == {
        "MLFLOW_STACK_ADMIN_PASSWORD",
        "MLFLOW_STACK_DB_PASSWORD",
        "MLFLOW_STACK_SECRET_KEY",
        "MLFLOW_STACK_KEK_PASSPHRASE",
    }
    mlflow_env = parse_env_file(life.stack.state_dir / "local" / "mlflow.env")
    assert mlflow_env["MLFLOW_FLASK_SERVER_SECRET_KEY"] == life.secrets["MLFLOW_STACK_SECRET_KEY"]
    assert mlflow_env["MLFLOW_CRYPTO_KEK_PASSPHRASE"] == life.secrets["MLFLOW_STACK_KEK_PASSPHRASE"]
    assert (
        urlquote(life.secrets["MLFLOW_STACK_DB_PASSWORD"])
        in (mlflow_env["MLFLOW_BACKEND_STORE_URI"])
    )


def test_no_secret_on_any_command_line_of_the_machine(life):
    # The sampler saw the stack's own processes, so it was looking at the right time.
    marker = str(life.stack.state_dir).encode()
    ours = [c for c in life.cmdlines if marker in c]
    assert any(b"supervisord" in c for c in ours), "the sampler never saw supervisord"
    assert any(b"mlflow" in c and b"server" in c for c in ours), "the sampler never saw MLflow"
    assert any(b"postgres" in c for c in ours), "the sampler never saw PostgreSQL"
    assert life.scans > 50
    leaks = []
    for cmdline, pid in life.cmdlines.items():
        found = find_forms(cmdline, life.forms)
        if found:
            shown = cmdline.replace(b"\0", b" ").decode(errors="replace")
            for form in life.forms.values():
                shown = shown.replace(form.decode(), "<SECRET>")
            leaks.append(f"pid {pid}: {found}: {shown[:200]}")
    assert not leaks, "\n".join(leaks)


def test_no_secret_in_any_log_file(life):
    logs = life.stack.state_dir / "logs"
    files = [p for p in logs.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"mlflow.log", "postgresql.log", "supervisord.log"} <= names, names
    # The failed logins did reach the server and its log.
    assert b"401" in (logs / "mlflow.log").read_bytes()
    leaks = {
        str(p.relative_to(logs)): found
        for p in files
        if (found := find_forms(p.read_bytes(), life.forms))
    }
    assert not leaks, leaks


def test_no_secret_in_the_output_of_any_task(life):
    assert set(life.outputs) == {"up", "status", "logs --tail 100000", "db.probe", "down"}
    leaks = {
        task: found
        for task, output in life.outputs.items()
        if (found := find_forms(output.encode(), life.forms))
    }
    assert not leaks, leaks


def test_files_holding_secrets_are_private(life):
    not_private = {name: oct(mode) for name, mode in life.modes.items() if mode != 0o600}
    assert not not_private, not_private
    # Any other file of the stack's folder that holds a secret must be private too.
    for name in life.private_files_with_secrets:
        mode = stat.S_IMODE((life.stack.state_dir / name).stat().st_mode)
        assert mode & 0o077 == 0, f"{name} holds a secret and is {oct(mode)}"
    assert set(SECRET_FILES) <= set(life.private_files_with_secrets)


def test_the_stack_folder_is_ignored_by_git():
    root = paths.PROJECT_ROOT
    inside = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "--is-inside-work-tree"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    if inside.returncode != 0:
        pytest.skip(f"{root} is not a git work tree: {inside.stderr.strip()}")
    for path in (".stack/", ".stack/ci/secrets.env", ".stack/demo/local/mlflow.env"):
        ignored = subprocess.run(
            ["git", "-C", str(root), "check-ignore", "-q", "--no-index", path],
            capture_output=True,
            check=False,
            timeout=30,
        )
        assert ignored.returncode == 0, f"{path} is not ignored by git"
    tracked = subprocess.run(
        ["git", "-C", str(root), "ls-files", "--", ".stack"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert tracked.stdout == "", f"tracked under .stack/: {tracked.stdout}"
