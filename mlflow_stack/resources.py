"""Which MLflow resource a perms.* selector flag names, and what a grant on it may be.

MLflow 3.17's permission API (mlflow/server/auth/permissions.py) knows concrete resource types,
granted per id, and sub-resource tiers, granted only as `*`. Each concrete type has one selector
flag here; the tiers share --tier. A grant MLflow would store but never check is refused here
rather than reported as done: a registered-model grant on a prompt (MLflow checks prompts under
`prompt`), or USE where no route of that type asks for `can_use`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

from mlflow_stack.client import AdminClient, MlflowApiError, is_prompt
from mlflow_stack.errors import StackError

# Levels MLflow accepts on a resource (RESOURCE_GRANTABLE_PERMISSIONS). USE only changes
# anything where a route checks `can_use`: the gateway's secrets, model definitions and
# endpoints. Everywhere else USE is READ under another name, so it is refused.
LEVEL_ORDER = ("READ", "USE", "EDIT", "MANAGE", "DENY")
ALL_LEVELS = frozenset(LEVEL_ORDER)
WITHOUT_USE = ALL_LEVELS - {"USE"}

# MLflow's wildcard-only sub-resource tiers (permissions.TYPE, WILDCARD_ONLY): a grant on one
# applies to every such child of the containers the user can already reach.
TIERS = (
    "run",
    "trace",
    "assessment",
    "logged_model",
    "review_queue",
    "registered_model_version",
    "prompt_version",
    "scorer_version",
    "mcp_server_version",
)


@dataclass(frozen=True)
class Kind:
    """A selector flag: the MLflow resource type it grants on, the levels that mean something."""

    parameter: str
    resource_type: str
    noun: str
    metavar: str
    levels: frozenset[str] = WITHOUT_USE

    @property
    def flag(self) -> str:
        return "--" + self.parameter.replace("_", "-")


KINDS = (
    Kind("experiment", "experiment", "experiment", "NAME_OR_ID"),
    Kind("model", "registered_model", "registered model", "NAME"),
    Kind("prompt", "prompt", "prompt", "NAME"),
    Kind("scorer", "scorer", "scorer", "EXPERIMENT_ID/NAME"),
    Kind("gateway_secret", "gateway_secret", "gateway secret", "ID_OR_NAME", ALL_LEVELS),
    Kind("gateway_endpoint", "gateway_endpoint", "gateway endpoint", "ID_OR_NAME", ALL_LEVELS),
    Kind(
        "gateway_model_definition",
        "gateway_model_definition",
        "gateway model definition",
        "ID_OR_NAME",
        ALL_LEVELS,
    ),
    Kind("mcp_server", "mcp_server", "MCP server", "NAME"),
    Kind("tier", "", "tier", "TYPE"),
)
BY_PARAMETER = {kind.parameter: kind for kind in KINDS}
BY_TYPE = {kind.resource_type: kind for kind in KINDS if kind.resource_type}
SELECTOR_PARAMETERS = tuple(kind.parameter for kind in KINDS)


@dataclass(frozen=True)
class Resource:
    """What a grant is written on: MLflow's (resource_type, resource_id), and how to name it."""

    type: str
    id: str
    label: str
    kind: Kind
    # False for a grant MLflow stores but never checks: one made before resolve() refused it.
    enforced: bool = True


def selected(selectors: Mapping[str, str | None]) -> tuple[Kind, str]:
    """The one selector flag a call set, and its value; a one-line error for none or several."""
    given = [(BY_PARAMETER[name], value) for name, value in selectors.items() if value is not None]
    if len(given) != 1:
        flags = ", ".join(f"{kind.flag} {kind.metavar}" for kind in KINDS)
        several = f" (got {', '.join(kind.flag for kind, _ in given)})" if given else ""
        raise StackError(f"pass exactly one of {flags}{several}")
    kind, value = given[0]
    if not str(value).strip():
        raise StackError(f"{kind.flag} needs a value ({kind.metavar})")
    return kind, str(value).strip()


def check_level(kind: Kind, permission: str, tier: str | None = None) -> None:
    """Refuse a level MLflow would store on this type but never check."""
    if permission in kind.levels:
        return
    noun = f"the {tier} tier" if tier else f"a {kind.noun}"
    choices = ", ".join(level for level in LEVEL_ORDER if level in kind.levels)
    raise StackError(
        f"--level {permission} is not enforced on {noun} by MLflow 3.17 (no route of it checks "
        f"USE, so it would act as READ): choose {choices}"
    )


def tier_type(value: str) -> str:
    """A --tier value as MLflow's resource type (`prompt-version` or `prompt_version`)."""
    resource_type = value.strip().lower().replace("-", "_")
    if resource_type not in TIERS:
        raise StackError(f"invalid --tier {value!r}: choose {', '.join(TIERS)}")
    return resource_type


def scorer_parts(value: str) -> tuple[str, str]:
    """`EXPERIMENT_ID/NAME` -> (experiment id, scorer name); the name may hold more slashes."""
    experiment_id, slash, name = value.partition("/")
    if not slash or not experiment_id.isdigit() or not name:
        raise StackError(
            f"invalid --scorer {value!r}: EXPERIMENT_ID/SCORER_NAME, e.g. 12/relevance "
            "(the experiment's id, then the scorer's name)"
        )
    return experiment_id, name


def scorer_pattern(experiment_id: str, name: str) -> str:
    """MLflow's resource id of a scorer: the name URL-quoted, so that `/` in it is unambiguous."""
    return f"{experiment_id}/{quote(name, safe='')}"


# --- the lookups: is the resource there, and is it of the type the flag names -----------------


def _lookup(fetch: Callable[[], dict[str, Any]], missing: str) -> dict[str, Any]:
    try:
        return fetch()
    except MlflowApiError as exc:
        if exc.not_found:
            raise StackError(missing) from None
        raise


def _experiment(client: AdminClient, value: str) -> dict[str, Any]:
    if value.isdigit():
        try:
            return client.experiment_by_id(value)
        except MlflowApiError as exc:
            if not exc.not_found:
                raise
    kind = "id or name" if value.isdigit() else "name"
    return _lookup(
        lambda: client.experiment_by_name(value), f"no experiment with the {kind} {value!r}"
    )


def _by_id_or_name(
    by_id: Callable[[], dict[str, Any]],
    every: Callable[[], list[dict[str, Any]]],
    name_key: str,
    value: str,
    missing: str,
) -> dict[str, Any]:
    # By id first: an id is what MLflow grants on.
    try:
        return by_id()
    except MlflowApiError as exc:
        if not exc.not_found:
            raise
    try:
        candidates = every()
    except MlflowApiError as exc:
        if not exc.not_found:
            raise
        candidates = []
    for item in candidates:
        if item.get(name_key) == value:
            return item
    raise StackError(missing)


def resolve(client: AdminClient, kind: Kind, value: str, *, revoking: bool = False) -> Resource:
    """The resource a selector names, checked to exist and to be what MLflow enforces the grant on.

    `revoking` lets --model name a prompt: grants made that way before this check existed are
    stored (and never enforced) and must still be removable.
    """
    name = kind.parameter
    if name == "experiment":
        found = _experiment(client, value)
        experiment_id = str(found["experiment_id"])
        return Resource(
            kind.resource_type,
            experiment_id,
            f"experiment {found.get('name')!r} (id {experiment_id})",
            kind,
        )
    if name in ("model", "prompt"):
        found = _lookup(lambda: client.registered_model(value), f"no {kind.noun} named {value!r}")
        if name == "model" and is_prompt(found):
            if revoking:
                label = f"model {value!r} (a prompt: a model grant on it was never enforced)"
                return Resource(kind.resource_type, value, label, kind, enforced=False)
            raise StackError(
                f"{value!r} is a prompt: MLflow 3.17 checks prompts under their own permission "
                f"type, so grant on it with --prompt {value}"
            )
        if name == "prompt" and not is_prompt(found):
            raise StackError(f"{value!r} is a registered model, not a prompt: use --model {value}")
        return Resource(kind.resource_type, value, f"{kind.noun} {value!r}", kind)
    if name == "scorer":
        experiment_id, scorer_name = scorer_parts(value)
        experiment = _experiment(client, experiment_id)
        _lookup(
            lambda: client.scorer(experiment_id, scorer_name),
            f"no scorer named {scorer_name!r} in experiment {experiment.get('name')!r} "
            f"(id {experiment_id})",
        )
        return Resource(
            kind.resource_type,
            scorer_pattern(experiment_id, scorer_name),
            f"scorer {scorer_name!r} of experiment {experiment.get('name')!r} (id {experiment_id})",
            kind,
        )
    if name == "gateway_secret":
        found = _by_id_or_name(
            lambda: client.gateway_secret(value),
            client.gateway_secrets,
            "secret_name",
            value,
            f"no gateway secret with the id or name {value!r}",
        )
        return _named(kind, str(found["secret_id"]), found.get("secret_name"))
    if name == "gateway_endpoint":
        found = _by_id_or_name(
            lambda: client.gateway_endpoint(endpoint_id=value),
            lambda: [client.gateway_endpoint(name=value)],
            "name",
            value,
            f"no gateway endpoint with the id or name {value!r}",
        )
        return _named(kind, str(found["endpoint_id"]), found.get("name"))
    if name == "gateway_model_definition":
        found = _by_id_or_name(
            lambda: client.gateway_model_definition(value),
            client.gateway_model_definitions,
            "name",
            value,
            f"no gateway model definition with the id or name {value!r}",
        )
        return _named(kind, str(found["model_definition_id"]), found.get("name"))
    if name == "mcp_server":
        _lookup(lambda: client.mcp_server(value), f"no MCP server named {value!r}")
        return Resource(kind.resource_type, value, f"MCP server {value!r}", kind)
    resource_type = tier_type(value)
    label = f"every {resource_type.replace('_', ' ')} (the {resource_type} tier)"
    return Resource(resource_type, "*", label, kind)


def _named(kind: Kind, resource_id: str, name: object) -> Resource:
    return Resource(
        kind.resource_type, resource_id, f"{kind.noun} {name!r} (id {resource_id})", kind
    )


def _quietly(fetch: Callable[[], object]) -> str:
    """A name for a listing: what fetch returns, or a note when MLflow no longer has it."""
    try:
        return str(fetch())
    except StackError:
        return "(deleted?)"


def display_name(client: AdminClient, resource_type: str, resource_id: str) -> str:
    """What perms.list shows in its NAME column: the resource's name, or a warning about it."""
    if resource_id == "*":
        return "(every one)"
    if resource_type == "experiment":
        return _quietly(lambda: client.experiment_by_id(resource_id).get("name", ""))
    if resource_type in ("registered_model", "prompt"):
        try:
            found = client.registered_model(resource_id)
        except StackError:
            return "(deleted?)"
        if is_prompt(found) != (resource_type == "prompt"):
            other = "--model" if is_prompt(found) else "--prompt"
            flag = "--prompt" if is_prompt(found) else "--model"
            return f"{resource_id} (NOT enforced: revoke with {other}, grant with {flag})"
        return resource_id
    if resource_type == "scorer":
        experiment_id, _, quoted = resource_id.partition("/")
        experiment = _quietly(lambda: client.experiment_by_id(experiment_id).get("name", ""))
        return f"{unquote(quoted)} (experiment {experiment})"
    if resource_type == "gateway_secret":
        return _quietly(lambda: client.gateway_secret(resource_id).get("secret_name", ""))
    if resource_type == "gateway_endpoint":
        return _quietly(lambda: client.gateway_endpoint(endpoint_id=resource_id).get("name", ""))
    if resource_type == "gateway_model_definition":
        return _quietly(lambda: client.gateway_model_definition(resource_id).get("name", ""))
    return resource_id
