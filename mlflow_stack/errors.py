"""The one exception type the task layer turns into a one-line message and exit code 1."""


class StackError(Exception):
    """A problem a user can act on; its message is written for them, on one line."""
