"""MLFLOW_STACK_DEBUG: the traceback and the external commands that the one-line errors hide."""

from __future__ import annotations

import pytest
from invoke.exceptions import Exit

from mlflow_stack.cli import exits
from mlflow_stack.errors import StackError


def failing() -> None:
    raise StackError("the database does not answer")


def test_without_debug_an_error_is_one_line_and_exit_1(monkeypatch):
    monkeypatch.delenv(exits.DEBUG_VARIABLE, raising=False)
    with pytest.raises(Exit) as ended:
        exits.user_errors(failing)()
    assert (ended.value.code, ended.value.message) == (1, "error: the database does not answer")


def test_with_debug_the_error_keeps_its_traceback(monkeypatch):
    monkeypatch.setenv(exits.DEBUG_VARIABLE, "1")
    monkeypatch.setattr(exits, "trace_commands", lambda: None)
    with pytest.raises(StackError, match="the database does not answer"):
        exits.user_errors(failing)()


def test_each_external_command_is_printed_as_a_user_could_run_it(capsys):
    exits._print_commands("subprocess.Popen", ("psql", ["psql", "--dbname", "my db"], None, None))
    exits._print_commands("open", ("/etc/passwd", "r", 0))
    assert capsys.readouterr().err == "+ psql --dbname 'my db'\n"
