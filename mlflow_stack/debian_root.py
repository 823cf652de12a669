"""A Debian root for the stand-in images: debootstrap minbase from the host's apt sources,
slimmed like the official slim images, cached as a tar that is always whole."""

from __future__ import annotations

import datetime
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mlflow_stack import programs
from mlflow_stack.errors import StackError

SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
DEBOOTSTRAP_TIMEOUT_SECONDS = 1200


# --- apt sources: where debootstrap and the images' apt get Debian -----------------------


@dataclass(frozen=True)
class AptSource:
    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]


def parse_one_line_sources(text: str) -> list[AptSource]:
    """`deb [options] uri suite component…` lines (sources.list)."""
    sources = []
    for raw in text.splitlines():
        line = re.sub(r"\[[^\]]*\]", " ", raw.split("#", 1)[0])
        words = line.split()
        if len(words) >= 3 and words[0] == "deb":
            sources.append(AptSource(words[1].rstrip("/"), (words[2],), tuple(words[3:])))
    return sources


def parse_deb822_sources(text: str) -> list[AptSource]:
    """Paragraphs of `Types:`, `URIs:`, `Suites:`, `Components:` (*.sources)."""
    sources: list[AptSource] = []
    for paragraph in re.split(r"\n[ \t]*\n", text):
        fields: dict[str, str] = {}
        key = ""
        for line in paragraph.splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            if line[0] in " \t" and key:
                fields[key] += " " + line.strip()
                continue
            key, _, value = line.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if fields.get("enabled", "yes").lower() == "no":
            continue
        if "deb" not in fields.get("types", "").split():
            continue
        suites = tuple(fields.get("suites", "").split())
        components = tuple(fields.get("components", "").split())
        sources.extend(
            AptSource(uri.rstrip("/"), suites, components) for uri in fields.get("uris", "").split()
        )
    return sources


def host_apt_sources(apt_dir: Path = Path("/etc/apt")) -> list[AptSource]:
    sources = []
    files = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*"))]
    for path in files:
        if not path.is_file():
            continue
        if path.suffix == ".list":
            sources += parse_one_line_sources(path.read_text(errors="replace"))
        elif path.suffix == ".sources":
            sources += parse_deb822_sources(path.read_text(errors="replace"))
    return sources


def debian_mirror(sources: Iterable[AptSource], suite: str = SUITE) -> str:
    """The URI of the first source that serves `suite` itself, else deb.debian.org."""
    for source in sources:
        if suite in source.suites:
            return source.uri
    return DEFAULT_MIRROR


def image_apt_sources(sources: Iterable[AptSource], suite: str = SUITE) -> str:
    """A deb822 sources file for the images: the host's entries for the release, its updates
    and its security suite (main only), so the images install what the host would."""
    wanted = (suite, f"{suite}-updates", f"{suite}-security")
    by_uri: dict[str, list[str]] = {}
    for source in sources:
        for name in source.suites:
            if name in wanted and name not in by_uri.setdefault(source.uri, []):
                by_uri[source.uri].append(name)
    by_uri = {uri: names for uri, names in by_uri.items() if names}
    if not by_uri:
        by_uri = {DEFAULT_MIRROR: [suite, f"{suite}-updates"]}
    paragraphs = [
        f"Types: deb\nURIs: {uri}\nSuites: {' '.join(names)}\nComponents: main\n"
        f"Signed-By: {KEYRING}\n"
        for uri, names in by_uri.items()
    ]
    return "\n".join(paragraphs)


# --- the base image: a debootstrap minbase root, cached as a tar -------------------------


def base_tar_name(day: datetime.date) -> str:
    return f"debian-{SUITE}-minbase-{day:%Y%m%d}.tar"


def cached_base_tar(folder: Path) -> Path | None:
    """The newest finished base tar; partial files of an interrupted run never match."""
    found = sorted(folder.glob(f"debian-{SUITE}-minbase-[0-9]*[0-9].tar"))
    return found[-1] if found else None


# Like the official slim images: no docs, man pages or translations, and no apt caches.
DPKG_SLIM = """\
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
"""
APT_CLEAN = """\
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
"""


def _empty(folder: Path, keep: Iterable[str] = ()) -> None:
    for child in folder.glob("*"):
        if child.name in keep:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def slim_rootfs(root: Path, sources_text: str) -> None:
    (root / "etc/apt/sources.list").unlink(missing_ok=True)
    (root / "etc/apt/sources.list.d/debian.sources").write_text(sources_text)
    (root / "etc/dpkg/dpkg.cfg.d/mlflow-stack-slim").write_text(DPKG_SLIM)
    (root / "etc/apt/apt.conf.d/mlflow-stack-clean").write_text(APT_CLEAN)
    for doc in (root / "usr/share/doc").glob("*"):
        if doc.is_dir() and not doc.is_symlink():
            _empty(doc, keep=("copyright",))
    for folder in ("usr/share/man", "usr/share/info"):
        _empty(root / folder)
    _empty(root / "var/cache/apt/archives", keep=("partial", "lock"))
    for stale in (*(root / "var/cache/apt").glob("*.bin"), *(root / "var/log").rglob("*")):
        if stale.is_file():
            stale.unlink()
    _empty(root / "var/lib/apt/lists", keep=("partial", "lock"))
    _empty(root / "usr/share/locale", keep=("locale.alias",))
    # The engine provides these per container; the host's must not ship in an image.
    for name in ("etc/resolv.conf", "etc/hostname"):
        (root / name).unlink(missing_ok=True)


def mounts_under(folder: Path) -> list[str]:
    prefix = str(folder).rstrip("/") + "/"
    mounts = Path("/proc/self/mounts").read_text().splitlines()
    points = [line.split()[1].encode().decode("unicode_escape") for line in mounts]
    return [point for point in points if point.startswith(prefix)]


def remove_root(root: Path) -> None:
    """Delete a debootstrap root, unless a failed run left /proc or /sys mounted in it."""
    left = mounts_under(root)
    if left:
        raise StackError(f"debootstrap left {left[0]} mounted: unmount it, then delete {root}")
    shutil.rmtree(root, ignore_errors=True)


def run_logged(argv: list[str], log: Path, timeout: float) -> None:
    """debootstrap and tar: output appended to a log file the error message points at."""
    programs.run(argv, timeout=timeout, log=log)


def build_base_tar(folder: Path, sources: list[AptSource]) -> Path:
    debootstrap = shutil.which("debootstrap") or shutil.which("/usr/sbin/debootstrap")
    if os.geteuid() != 0 or debootstrap is None:
        raise StackError(
            "the images cannot be pulled and building stand-ins needs root and debootstrap: "
            "run as root with `apt-get install debootstrap`, or make the images pullable"
        )
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / base_tar_name(datetime.date.today())
    log = folder / "logs" / "debootstrap.log"
    log.unlink(missing_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="debootstrap-", dir=folder))
    root = scratch / "root"
    partial = folder / f"{target.name}.partial-{os.getpid()}"
    try:
        run_logged(
            [debootstrap, "--variant=minbase", SUITE, str(root), debian_mirror(sources)],
            log,
            DEBOOTSTRAP_TIMEOUT_SECONDS,
        )
        slim_rootfs(root, image_apt_sources(sources))
        run_logged(
            [
                "tar",
                "--numeric-owner",
                "--exclude=./dev/*",
                "--exclude=./proc/*",
                "--exclude=./sys/*",
                "-C",
                str(root),
                "-cf",
                str(partial),
                ".",
            ],
            log,
            600,
        )
        # Written under another name and renamed: a cached tar is always a whole one.
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
        remove_root(scratch)
    return target
