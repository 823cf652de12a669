"""Which of MLflow's after-request handlers do nothing for an admin, read from their source.

The fast path asks once per worker (at the first admin response that has a handler), never per
request: for an admin it skips a handler that would have returned at once, and with it that
handler's user lookup. Only a shape it recognises counts; anything else keeps the handler.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from typing import Any


def handlers(m: Any) -> frozenset[Any]:
    """The handlers of MLflow's two after-request tables that return at once for an admin."""
    found = {*m.AFTER_REQUEST_HANDLERS.values(), *m.PARAMETERIZED_AFTER_REQUEST_HANDLERS.values()}
    return frozenset(h for h in found if returns_at_once_for_admins(m, h))


def returns_at_once_for_admins(m: Any, handler: Any, depth: int = 1) -> bool:
    """Whether an after-request handler starts with ``if sender_is_admin(): return`` (itself,
    or as the first thing of the one helper it calls): then, for an admin, skipping it is
    what it would have done, minus its user lookup."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(handler)))
    except (OSError, TypeError, SyntaxError):
        return False
    function = tree.body[0]
    if not isinstance(function, ast.FunctionDef):
        return False
    body = [s for s in function.body if not _is_docstring(s)]
    if not body:
        return False
    first = body[0]
    if (
        isinstance(first, ast.If)
        and _calls(first.test, "sender_is_admin")
        and not first.orelse
        and len(first.body) == 1
        and isinstance(first.body[0], ast.Return)
        and first.body[0].value is None
    ):
        return True
    if (
        depth
        and len(body) == 1
        and isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Call)
    ):
        call = first.value
        if isinstance(call.func, ast.Name) and all(map(_side_effect_free, call.args)):
            helper = getattr(m, call.func.id, None)
            return helper is not None and returns_at_once_for_admins(m, helper, depth - 1)
    return False


def _is_docstring(statement: ast.stmt) -> bool:
    return isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant)


def _calls(node: ast.expr, name: str) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == name
        and not node.args
    )


def _side_effect_free(node: ast.expr) -> bool:
    # The helpers are called with the response, a proto message class's Response() and a
    # lambda picking the entities: nothing that reads the database or the request.
    if isinstance(node, ast.Name | ast.Lambda | ast.Constant):
        return True
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "Response"
        and not node.args
    )
