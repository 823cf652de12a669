"""Artifacts on S3-compatible storage (artifacts_store = "s3"): the profile keys' rules, the
artifacts destination and the server's environment, for every runtime.

Credentials travel by reference only: the server is told where a shared-credentials file is
(AWS_SHARED_CREDENTIALS_FILE), never what it holds. Nothing here reads a value out of that file
beyond checking that it has the two keys, and no message quotes it.
"""

from __future__ import annotations

import configparser
import ipaddress
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from mlflow_stack.errors import StackError

if TYPE_CHECKING:  # profile.py imports this module to validate its keys
    from mlflow_stack.profile import Profile

STORES = ("local", "s3")
# The variables boto3 and MLflow's S3 artifact repository read.
CREDENTIALS_VARIABLE = "AWS_SHARED_CREDENTIALS_FILE"
ENDPOINT_VARIABLE = "MLFLOW_S3_ENDPOINT_URL"
REGION_VARIABLE = "AWS_DEFAULT_REGION"
# Compose: the top-level secret's name; Compose mounts it at /run/secrets/<name>.
COMPOSE_SECRET = "s3_credentials"  # noqa: S105 - a name, not a secret
COMPOSE_CREDENTIALS = f"/run/secrets/{COMPOSE_SECRET}"
# Kubernetes: the user's Secret's key, mounted read-only as a file in its own folder.
K8S_SECRET_KEY = "credentials"  # noqa: S105 - a key name
K8S_CREDENTIALS_DIR = "/mlflow/s3"
K8S_CREDENTIALS = f"{K8S_CREDENTIALS_DIR}/{K8S_SECRET_KEY}"

# S3's bucket naming rules (general purpose buckets): 3-63 characters, lower-case letters,
# digits, '.' and '-', a letter or digit at both ends, no '..', not an IP address, none of the
# prefixes and suffixes S3 reserves.
BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")
# The key characters S3 calls safe, so that the prefix needs no escaping in a URI.
PREFIX = re.compile(r"[A-Za-z0-9!_.*'()/-]{1,512}")
REGION = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
REQUIRED_KEYS = ("aws_access_key_id", "aws_secret_access_key")


def enabled(profile: Profile) -> bool:
    """Whether the profile keeps its artifacts on S3."""
    return profile.artifacts_store == "s3"


def destination(profile: Profile) -> str:
    """The server's --artifacts-destination: s3://<bucket>/<prefix>."""
    if not profile.s3_prefix:
        return f"s3://{profile.s3_bucket}"
    return f"s3://{profile.s3_bucket}/{profile.s3_prefix}"


def artifacts_destination(profile: Profile, local_destination: str) -> str:
    """The server's --artifacts-destination: the bucket for s3, else `local_destination`."""
    return destination(profile) if enabled(profile) else local_destination


def credentials_path(profile: Profile) -> Path | None:
    """The user's shared-credentials file, absolute; None where boto3's own chain applies."""
    if not profile.s3_credentials_file:
        return None
    return Path(profile.s3_credentials_file).expanduser().resolve()


def check_compose_owner(profile: Profile, container_uid: int) -> None:
    """Compose bind-mounts the credentials file with its host owner and mode (it ignores a
    secret's uid and mode outside Swarm, and cannot inject one into a read-only service): the
    server, uid `container_uid`, must own the 0600 file or it cannot read it."""
    path = credentials_path(profile) if enabled(profile) else None
    if path is None or path.stat().st_uid == container_uid:
        return
    raise StackError(
        f"on the compose runtime the server (uid {container_uid}) reads s3_credentials_file "
        f"{path} as it is on this machine: chown {container_uid} {path}"
    )


def server_environment(profile: Profile, credentials_file: str) -> dict[str, str]:
    """The server's S3 variables: where the credentials file is (as the server sees it; "" for
    none), the endpoint and the region where set. Empty for local artifacts."""
    if not enabled(profile):
        return {}
    env: dict[str, str] = {}
    if credentials_file:
        env[CREDENTIALS_VARIABLE] = credentials_file
    if profile.s3_endpoint_url:
        env[ENDPOINT_VARIABLE] = profile.s3_endpoint_url
    if profile.s3_region:
        env[REGION_VARIABLE] = profile.s3_region
    return env


def endpoint_port(profile: Profile) -> int:
    """The TCP port the server reaches S3 on (the Kubernetes NetworkPolicy lets it out)."""
    if not profile.s3_endpoint_url:
        return 443
    parts = urlsplit(profile.s3_endpoint_url)
    return parts.port or (443 if parts.scheme == "https" else 80)


# --- The profile keys' rules (profile._validate calls validate). ------------------------------


def validate(name: str, settings: Mapping[str, Any]) -> None:
    """Refuse, in one line, S3 settings that cannot work; nothing to check for local artifacts."""
    store = settings["artifacts_store"]
    if store not in STORES:
        raise StackError(f"profile {name}: artifacts_store = {store!r}; allowed: local, s3")
    if store != "s3":
        return
    if settings["artifacts_destination"]:
        raise StackError(
            f"profile {name}: artifacts_destination is a local folder: leave it empty with "
            'artifacts_store = "s3"'
        )
    _check_bucket(name, settings["s3_bucket"])
    prefix = settings["s3_prefix"]
    if prefix and (
        not PREFIX.fullmatch(prefix)
        or prefix.startswith("/")
        or prefix.endswith("/")
        or any(part in ("", ".", "..") for part in prefix.split("/"))
    ):
        raise StackError(
            f"profile {name}: s3_prefix {prefix!r} must be letters, digits and !_.*'()- in "
            "'/'-separated parts, without a leading or trailing '/'"
        )
    _check_endpoint(name, settings["s3_endpoint_url"])
    region = settings["s3_region"]
    if region and not REGION.fullmatch(region):
        raise StackError(f"profile {name}: s3_region {region!r} is not like eu-west-1")
    if settings["s3_credentials_file"]:
        check_credentials_file(name, settings["s3_credentials_file"])


def _check_bucket(name: str, bucket: str) -> None:
    if not bucket:
        raise StackError(f'profile {name}: artifacts_store = "s3" needs s3_bucket')
    problem = ""
    if not BUCKET.fullmatch(bucket):
        problem = "3-63 lower-case letters, digits, '.' and '-', a letter or digit at both ends"
    elif ".." in bucket:
        problem = "no '..'"
    elif _is_ip_address(bucket):
        problem = "not an IP address"
    elif bucket.startswith(RESERVED_PREFIXES) or bucket.endswith(RESERVED_SUFFIXES):
        problem = "none of S3's reserved prefixes and suffixes (xn--, sthree-, -s3alias, …)"
    if problem:
        raise StackError(
            f"profile {name}: s3_bucket {bucket!r} breaks S3's naming rules: {problem}"
        )


def _is_ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _check_endpoint(name: str, url: str) -> None:
    if not url:
        return
    parts = urlsplit(url)
    if "@" in parts.netloc:
        # Not quoted: the part before '@' is a credential.
        raise StackError(
            f"profile {name}: s3_endpoint_url must not carry credentials (use s3_credentials_file)"
        )
    try:
        port_ok = parts.port is None or 1 <= parts.port <= 65535
    except ValueError:
        port_ok = False
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or not port_ok
        or parts.query
        or parts.fragment
        or re.search(r"\s", url)
    ):
        raise StackError(
            f"profile {name}: s3_endpoint_url {url!r} is not an http(s) URL like "
            "https://minio.example.com:9000"
        )


def check_credentials_file(name: str, path_text: str) -> None:
    """The shared-credentials file exists, only its owner may read it, and it has [default]'s
    two keys; the messages name the file, never a value from it."""
    path = Path(path_text).expanduser()
    try:
        info = path.stat()
    except FileNotFoundError:
        raise StackError(f"profile {name}: s3_credentials_file {path} does not exist") from None
    except OSError as exc:
        raise StackError(f"profile {name}: s3_credentials_file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise StackError(f"profile {name}: s3_credentials_file {path} is not a file")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise StackError(
            f"profile {name}: s3_credentials_file {path} is mode {mode:04o}, open to group or "
            f"others: chmod 600 {path}"
        )
    if not os.access(path, os.R_OK):
        raise StackError(f"profile {name}: s3_credentials_file {path} is not readable")
    parser = configparser.RawConfigParser()
    try:
        parser.read_string(path.read_text(encoding="utf-8"), source=str(path))
    except (configparser.Error, UnicodeDecodeError, OSError):
        # The parser's message quotes the offending line, which may hold a key: not shown.
        raise StackError(
            f"profile {name}: s3_credentials_file {path} is not an AWS shared-credentials "
            "file (INI)"
        ) from None
    if not all(parser.get("default", key, fallback="").strip() for key in REQUIRED_KEYS):
        raise StackError(
            f"profile {name}: s3_credentials_file {path} has no [default] section with "
            "aws_access_key_id and aws_secret_access_key"
        )
