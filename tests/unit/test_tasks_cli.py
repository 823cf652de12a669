"""The task layer as a user meets it, in-process: invoke's own Program on tasks.py, one-line
errors, exit codes. Nothing here starts a program."""

from __future__ import annotations

from pathlib import Path

import pytest
from invoke import Collection, Program

import tasks
from mlflow_stack import paths


def run_invoke(capsys, *argv: str) -> tuple[int, str, str]:
    """`invoke ARGV…` as the console script runs it; returns (exit code, stdout, stderr)."""
    program = Program(namespace=Collection.from_module(tasks), binary="invoke")
    try:
        program.run(["invoke", *argv])
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(result: tuple[int, str, str], message: str) -> None:
    code, out, err = result
    assert code == 1, (out, err)
    assert err.strip().count("\n") == 0, err
    assert err.startswith("error: ") and message in err, err
    assert "Traceback" not in out + err


def test_list_shows_every_task_and_each_has_a_one_line_docstring(capsys, stack_home):
    code, out, _ = run_invoke(capsys, "--list")
    assert code == 0
    names = [line.split()[0] for line in out.splitlines()[2:] if line.strip()]
    for expected in ("render", "up", "db.probe", "tokens.create", "users.add", "perms.grant"):
        assert expected in names
    namespace = Collection.from_module(tasks)
    for name in namespace.task_names:
        body = namespace[name].body
        doc = (body.__doc__ or "").strip()
        assert doc and "\n" not in doc, name
        code, help_text, _ = run_invoke(capsys, "--help", name)
        assert code == 0 and "Docstring:\n  none" not in help_text, name


@pytest.mark.parametrize(
    ("args", "env_extra", "message"),
    [
        (["render", "-p", "prod"], {}, "unknown profile 'prod'; profiles: ci, demo, dev, sso"),
        (["render", "-p", "../etc"], {}, "invalid profile name '../etc'"),
        (["render", "-p", "dev"], {"MLFLOW_STACK_MLFLOW_PORT": "70000"}, "out of range"),
        (
            ["render", "-p", "demo"],
            {"MLFLOW_STACK_ADMIN_PASSWORD": "admin_password"},
            "refuses a known default password",
        ),
        (
            ["render", "-p", "ci"],
            {"MLFLOW_STACK_CA_BUNDLE": "/nonexistent/proxy-ca.pem"},
            "ca_bundle /nonexistent/proxy-ca.pem: No such file or directory",
        ),
        # Each of these once printed a traceback or did something else than asked.
        (["env", "-p", "ci"], {}, "profile ci has no secrets yet: run `invoke render -p ci`"),
        (["status", "--runtime", "podman"], {}, "unknown runtime 'podman'"),
        (["logs", "--tail", "abc"], {}, "--tail takes a whole number, got 'abc'"),
        (["logs", "--tail", "-3"], {}, "--tail must be 0 or more"),
        (["db.wait", "--timeout", "x"], {}, "--timeout takes a number of seconds, got 'x'"),
        (["db.wait", "--timeout", "0"], {}, "--timeout must be more than 0 seconds"),
        # A fractional timeout is a timeout: what stops it here is the missing stack.
        (["db.wait", "--timeout", "2.5"], {}, "profile dev has not been brought up"),
    ],
)
def test_bad_input_is_one_line_exit_1_and_writes_nothing(
    capsys, stack_home, monkeypatch, args, env_extra, message
):
    for key, value in env_extra.items():
        monkeypatch.setenv(key, value)
    assert_one_line_error(run_invoke(capsys, *args), message)
    assert not stack_home.exists()


def test_env_prints_the_password_that_render_stored(capsys, stack_home):
    assert run_invoke(capsys, "render", "-p", "ci")[0] == 0
    stored = (stack_home / "ci" / "secrets.env").read_text()
    first = run_invoke(capsys, "env", "-p", "ci")[1]
    assert first == run_invoke(capsys, "env", "-p", "ci")[1]
    password = next(
        line.split("=", 1)[1] for line in first.splitlines() if "PASSWORD=" in line
    ).strip("'")
    assert password in stored


@pytest.mark.parametrize(
    ("profile_text", "message"),
    [("mlflow_port = [\n", "dev.toml: malformed TOML"), ("colour = 1\n", "unknown key 'colour'")],
)
def test_broken_profile_files_are_one_line_errors(
    capsys, tmp_path, stack_home, monkeypatch, profile_text, message
):
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "base.toml").write_text((paths.PROFILES_DIR / "base.toml").read_text())
    (profiles / "dev.toml").write_text(profile_text)
    monkeypatch.setenv("MLFLOW_STACK_PROFILES_DIR", str(profiles))
    assert_one_line_error(run_invoke(capsys, "render", "-p", "dev"), message)
    assert not stack_home.exists()


def test_render_writes_every_profile(capsys, stack_home):
    for name in ("dev", "ci", "demo"):
        code, out, err = run_invoke(capsys, "render", "-p", name)
        assert code == 0, err
        assert Path(stack_home, name, "docker-compose.yml").exists()
        assert f"rendered profile {name}" in out


def test_help_after_any_task_name_shows_that_tasks_help(capsys, stack_home):
    # Positional arguments once swallowed it: users.add tried to add a user named "--help".
    for name in Collection.from_module(tasks).task_names:
        for spelling in ("--help", "-h"):
            code, out, err = run_invoke(capsys, name, spelling)
            assert code == 0, (name, spelling, err)
            assert out.startswith(f"Usage: invoke [--core-opts] {name} "), (name, out)
            assert "error" not in err, (name, err)


@pytest.mark.parametrize(
    ("args", "missing"),
    [
        (["users.add"], "--user"),
        (["users.passwd", "--password-stdin"], "--user"),
        (["perms.grant", "--experiment", "0"], "--user and --level"),
        (["perms.grant", "-u", "ada", "--experiment", "0"], "--level"),
        (["tokens.revoke"], "--token-id"),
        (["db.restore"], "--source"),
    ],
)
def test_a_missing_required_flag_is_one_line_naming_it(capsys, stack_home, args, missing):
    assert_one_line_error(run_invoke(capsys, *args), f"missing {missing} (")


def test_each_short_flag_means_one_thing_in_every_task():
    from mlflow_stack.cli.tasking import SHORT_FLAGS

    namespace = Collection.from_module(tasks)
    meaning: dict[str, set[str]] = {}
    for name in namespace.task_names:
        for argument in namespace[name].get_arguments():
            for short in (n for n in argument.names if len(n) == 1):
                meaning.setdefault(short, set()).add(argument.name)
    assert meaning, "no short flags at all"
    assert all(len(names) == 1 for names in meaning.values()), meaning
    assert {short: names.pop() for short, names in meaning.items()}.items() <= {
        short: name for name, short in SHORT_FLAGS.items()
    }.items()


def test_the_username_flag_is_user_in_every_task():
    namespace = Collection.from_module(tasks)
    for name in namespace.task_names:
        flags = {n for argument in namespace[name].get_arguments() for n in argument.names}
        assert "username" not in flags, name
        positional = [a.name for a in namespace[name].get_arguments() if a.positional]
        assert not positional, (name, positional)
