"""The task layer: what each `invoke` task does, printed for a person, one module per noun.

lifecycle (render … env), db, users, perms and tokens hold the task bodies; stack, inputs,
prompts and output are what several of them share; exits turns a StackError into one line.
tasks.py imports the bodies lazily, inside each task, so that `invoke --list` stays fast; what
it needs at import time is re-exported here.
"""

from mlflow_stack.cli.exits import user_errors
from mlflow_stack.cli.inputs import seconds, whole_number
from mlflow_stack.cli.tasking import stack_task

__all__ = ["seconds", "stack_task", "user_errors", "whole_number"]
