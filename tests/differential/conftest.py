"""The differential tier runs in-process like the unit tier: starting a program fails a test."""

from tests.unit.conftest import no_programs  # noqa: F401 - the same autouse guard
