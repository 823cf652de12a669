"""The one runner for external programs and the PostgreSQL programs' chokepoint, in-process:
`subprocess.run` is replaced by a recorder that answers as the program would."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from mlflow_stack import db, programs
from mlflow_stack.endpoints import DatabaseEndpoint
from mlflow_stack.errors import StackError
from mlflow_stack.pg_programs import OsUser, PostgresPrograms, client_login
from mlflow_stack.profile import load_profile
from mlflow_stack.render import render_profile
from mlflow_stack.secrets import load_secrets


class FakeRun:
    """Stands in for subprocess.run: records each call, writes `stdout`/`stderr` where the
    program's output would go, and exits with `code` (or times out)."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.code = 0
        self.stdout = ""
        self.stderr = ""
        self.times_out = False

    def __call__(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append({"argv": argv, **kwargs})
        if self.times_out:
            raise subprocess.TimeoutExpired(argv, kwargs.get("timeout") or 0)
        out, err = kwargs.get("stdout"), kwargs.get("stderr")
        if out is not None and hasattr(out, "write"):
            out.write(self.stdout)
            if err == subprocess.STDOUT:
                out.write(self.stderr)
        if err is not None and hasattr(err, "write"):
            err.write(self.stderr)
        return subprocess.CompletedProcess(argv, self.code)

    @property
    def last(self) -> dict[str, Any]:
        return self.calls[-1]


@pytest.fixture
def fake_run(monkeypatch) -> FakeRun:
    fake = FakeRun()
    monkeypatch.setattr(programs.subprocess, "run", fake)
    return fake


# --- programs.run -----------------------------------------------------------------------


def test_output_is_captured_through_files_not_pipes(fake_run):
    fake_run.stdout, fake_run.stderr = "out\n", "warning\n"
    result = programs.run(["/usr/bin/tool", "sub"], timeout=5)
    assert (result.returncode, result.stdout, result.stderr) == (0, "out\n", "warning\n")
    # A daemon the program leaves behind inherits its output: a pipe would hang the caller.
    for stream in ("stdout", "stderr"):
        assert fake_run.last[stream] is not subprocess.PIPE
        assert hasattr(fake_run.last[stream], "fileno")
    assert fake_run.last["stdin"] is subprocess.DEVNULL
    assert fake_run.last["input"] is None


def test_a_failure_is_one_line_with_the_exit_code_and_the_last_line_that_says_something(fake_run):
    fake_run.code = 3
    fake_run.stderr = "first\nError: the real reason\n\nRun 'tool --help' for more information\n"
    with pytest.raises(StackError) as error:
        programs.run(["/usr/bin/tool", "sub"], timeout=5)
    assert str(error.value) == "tool failed (exit 3): Error: the real reason"


def test_what_names_the_command_and_silence_says_no_output(fake_run):
    fake_run.code = 1
    with pytest.raises(StackError, match=r"^tool sub failed \(exit 1\): no output$"):
        programs.run(["/usr/bin/tool", "sub"], timeout=5, what="tool sub")


def test_check_false_returns_the_failure(fake_run):
    fake_run.code, fake_run.stderr = 2, "nope\n"
    result = programs.run(["tool"], timeout=5, check=False)
    assert (result.returncode, result.stderr) == (2, "nope\n")


def test_a_timeout_is_one_line(fake_run):
    fake_run.times_out = True
    with pytest.raises(StackError, match=r"^tool did not finish within 90 s$"):
        programs.run(["tool"], timeout=90)


def test_with_a_log_output_is_appended_there_and_the_error_points_at_it(fake_run, tmp_path):
    log = tmp_path / "logs" / "build.log"
    fake_run.stdout, fake_run.stderr = "step 1\n", "boom\n"
    programs.run(["tool"], timeout=5, log=log)
    fake_run.code = 4
    with pytest.raises(StackError) as error:
        programs.run(["tool"], timeout=5, log=log)
    assert str(error.value) == f"tool failed (exit 4): see {log}"
    assert log.read_text() == "step 1\nboom\n" * 2
    assert fake_run.last["stderr"] is subprocess.STDOUT


def test_stdin_env_cwd_and_the_user_switch_reach_the_program(fake_run, tmp_path):
    programs.run(
        ["tool"], timeout=5, stdin="answer\n", env={"A": "1"}, cwd=tmp_path, run_as=(1234, 99)
    )
    call = fake_run.last
    assert (call["input"], call["stdin"], call["env"], call["cwd"]) == (
        "answer\n",
        None,
        {"A": "1"},
        tmp_path,
    )
    assert (call["user"], call["group"], call["extra_groups"]) == (1234, 99, [])
    programs.run(["tool"], timeout=None)
    assert (fake_run.last["user"], fake_run.last["extra_groups"], fake_run.last["timeout"]) == (
        None,
        None,
        None,
    )


def test_attach_leaves_the_terminal_to_the_program(fake_run):
    fake_run.code = 5
    assert programs.attach(["psql"], env={"PGHOST": "h"}) == 5
    assert "stdout" not in fake_run.last and "stdin" not in fake_run.last
    assert fake_run.last["env"] == {"PGHOST": "h"}


# --- the PostgreSQL programs -------------------------------------------------------------


@pytest.fixture
def ci(stack_home):
    profile = load_profile("ci")
    render_profile(profile)
    return profile, load_secrets(profile)


def test_server_programs_get_a_c_locale_and_home_when_the_user_switches(fake_run, tmp_path):
    pg = PostgresPrograms(tmp_path / "bin")
    other = OsUser("postgres", os.geteuid() + 1, 4242)
    pg.run_server("initdb", "-D", "data", os_user=other, home=tmp_path, extra_env={"X": "y"})
    call = fake_run.last
    assert call["argv"] == [str(tmp_path / "bin" / "initdb"), "-D", "data"]
    assert (call["user"], call["group"], call["extra_groups"]) == (os.geteuid() + 1, 4242, [])
    assert call["env"]["LC_ALL"] == "C" and call["env"]["X"] == "y"
    assert call["env"]["HOME"] == str(tmp_path) and call["cwd"] == tmp_path
    assert call["timeout"] == 120

    me = OsUser("me", os.geteuid(), os.getegid())
    pg.run_server("pg_ctl", "stop", os_user=me, home=tmp_path)
    assert fake_run.last["user"] is None and "HOME" not in fake_run.last["env"]


def test_a_failing_server_program_is_named_by_its_tool(fake_run, tmp_path):
    fake_run.code, fake_run.stderr = 1, "initdb: error: directory exists\n"
    with pytest.raises(StackError, match=r"^initdb failed \(exit 1\): initdb: error: directory"):
        PostgresPrograms(tmp_path).run_server("initdb", os_user=None, home=tmp_path)


def test_client_programs_log_in_through_the_environment_never_argv(fake_run, ci, tmp_path):
    profile, secrets = ci
    endpoint = DatabaseEndpoint("127.0.0.1", 6543)
    login = client_login(profile, secrets, endpoint)
    assert login == {
        "PGHOST": "127.0.0.1",
        "PGPORT": "6543",
        "PGUSER": profile.db_user,
        "PGPASSWORD": secrets.db_password,
    }
    pg = PostgresPrograms(tmp_path)
    pg.run_client("pg_dump", "--dbname", "x", login=login, what="pg_dump of x")
    call = fake_run.last
    assert secrets.db_password not in " ".join(call["argv"])
    assert call["env"]["PGPASSWORD"] == secrets.db_password
    assert call["env"]["PATH"] == os.environ["PATH"]  # the caller's environment, plus libpq's
    assert call["timeout"] is None and call["user"] is None  # a dump takes what the data takes

    fake_run.code, fake_run.stderr = 1, 'pg_dump: error: database "x" does not exist\n'
    with pytest.raises(StackError, match=r"^pg_dump of x failed \(exit 1\): pg_dump: error: da"):
        pg.run_client("pg_dump", login=login, what="pg_dump of x")


def test_db_psql_attaches_the_profiles_psql_with_the_login(fake_run, ci, monkeypatch, tmp_path):
    profile, secrets = ci
    monkeypatch.setattr(PostgresPrograms, "for_profile", classmethod(lambda cls, p: cls(tmp_path)))
    fake_run.code = 2
    endpoint = DatabaseEndpoint("127.0.0.1", 6543)
    assert db.psql(profile, secrets, endpoint, profile.auth_database) == 2
    call = fake_run.last
    assert call["argv"] == [str(Path(tmp_path) / "psql"), "--dbname", profile.auth_database]
    assert call["env"]["PGPASSWORD"] == secrets.db_password
    assert "stdout" not in call  # psql for a person: the terminal is its own


def test_the_cluster_runs_its_programs_through_the_chokepoint(fake_run, ci):
    from mlflow_stack.runtime.postgres import PostgresCluster

    profile, secrets = ci
    cluster = PostgresCluster(profile, secrets)
    fake_run.stdout = "postgres (PostgreSQL) 18.1\n"
    assert cluster.binaries_major() == 18
    call = fake_run.last
    assert call["argv"] == [str(cluster.programs.bin_dir / "postgres"), "--version"]
    assert call["user"] is None and call["cwd"] == profile.layout.root  # as_cluster_user=False
    assert call["env"]["LC_ALL"] == "C"


# --- invoke in a subprocess (the tests' stacks and the bench) ---------------------------


def test_run_invoke_runs_this_pythons_invoke_from_the_project_root(fake_run):
    import sys

    from mlflow_stack import paths
    from mlflow_stack.invoking import run_invoke

    fake_run.code, fake_run.stdout = 1, "usage\n"
    result = run_invoke(["up", "--runtime", "local"], env={"A": "1"}, timeout=30, profile="ci")
    assert (result.returncode, result.stdout) == (1, "usage\n")  # the caller judges the exit
    call = fake_run.last
    assert call["argv"] == [
        sys.executable,
        "-m",
        "invoke",
        "up",
        "--runtime",
        "local",
        "--profile",
        "ci",
    ]
    assert (call["cwd"], call["env"], call["input"]) == (paths.PROJECT_ROOT, {"A": "1"}, None)
    run_invoke(["--list"], env={}, timeout=30, stdin="y\n")
    assert fake_run.last["argv"][3:] == ["--list"] and fake_run.last["input"] == "y\n"
