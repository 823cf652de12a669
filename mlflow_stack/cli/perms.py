"""The bodies of the perms.* tasks: what a user may do on one experiment or registered model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlflow_stack.cli.inputs import check_username, parse_level
from mlflow_stack.cli.output import print_table
from mlflow_stack.cli.users import no_such_user, require_user
from mlflow_stack.client import EXPERIMENT, REGISTERED_MODEL, AdminClient, Grant, MlflowApiError
from mlflow_stack.errors import StackError
from mlflow_stack.profile import load_profile


@dataclass(frozen=True)
class Resource:
    type: str
    id: str
    label: str


def _check_one_resource(experiment: str | None, model: str | None) -> None:
    if (experiment is None) == (model is None):
        raise StackError("pass exactly one of --experiment NAME_OR_ID and --model NAME")


def _resource(client: AdminClient, experiment: str | None, model: str | None) -> Resource:
    _check_one_resource(experiment, model)
    if model is not None:
        try:
            client.registered_model(model)
        except MlflowApiError as exc:
            if exc.not_found:
                raise StackError(f"no registered model named {model!r}") from None
            raise
        return Resource(REGISTERED_MODEL, model, f"model {model!r}")
    experiment = str(experiment)
    found: dict[str, Any] | None = None
    if experiment.isdigit():
        try:
            found = client.experiment_by_id(experiment)
        except MlflowApiError as exc:
            if not exc.not_found:
                raise
    if found is None:
        try:
            found = client.experiment_by_name(experiment)
        except MlflowApiError as exc:
            if exc.not_found:
                kind = "id or name" if experiment.isdigit() else "name"
                raise StackError(f"no experiment with the {kind} {experiment!r}") from None
            raise
    experiment_id = str(found["experiment_id"])
    return Resource(
        EXPERIMENT, experiment_id, f"experiment {found.get('name')!r} (id {experiment_id})"
    )


def _direct_grant(client: AdminClient, username: str, resource: Resource) -> Grant | None:
    _, grants = client.list_permissions(username)
    for grant in grants:
        if grant.direct and (grant.resource_type, grant.resource_id) == (
            resource.type,
            resource.id,
        ):
            return grant
    return None


def grant(
    profile_name: str,
    user: str,
    level: str,
    experiment: str | None = None,
    model: str | None = None,
) -> None:
    profile = load_profile(profile_name)
    check_username(user)
    permission = parse_level(level)
    _check_one_resource(experiment, model)
    with AdminClient.for_profile(profile) as client:
        require_user(client, user)
        resource = _resource(client, experiment, model)
        previous = _direct_grant(client, user, resource)
        if previous is not None and previous.permission == permission:
            print(f"{user} already has {permission} on {resource.label}; nothing changed")
            return
        if previous is not None:
            # MLflow refuses a second grant on the same resource: replace it.
            client.revoke(user, resource.type, resource.id)
        try:
            client.grant(user, resource.type, resource.id, permission)
        except StackError:
            if previous is not None:
                client.grant(user, resource.type, resource.id, previous.permission)
            raise
    change = f" (was {previous.permission})" if previous is not None else ""
    print(f"granted {permission} on {resource.label} to {user}{change}")
    if level.strip().upper() == "NO_PERMISSIONS":
        print("(MLflow 3.17 stores NO_PERMISSIONS on a resource as DENY: no access at all)")


def revoke(
    profile_name: str, user: str, experiment: str | None = None, model: str | None = None
) -> None:
    profile = load_profile(profile_name)
    check_username(user)
    _check_one_resource(experiment, model)
    with AdminClient.for_profile(profile) as client:
        require_user(client, user)
        resource = _resource(client, experiment, model)
        try:
            client.revoke(user, resource.type, resource.id)
        except MlflowApiError as exc:
            if exc.not_found:
                print(f"{user} had no grant on {resource.label}; nothing changed")
                return
            raise
    print(
        f"revoked the grant of {user} on {resource.label}: "
        f"default_permission ({profile.default_permission}) applies again"
    )


def list_grants(profile_name: str, user: str) -> None:
    profile = load_profile(profile_name)
    check_username(user)
    with AdminClient.for_profile(profile) as client:
        try:
            is_admin, grants = client.list_permissions(user)
        except MlflowApiError as exc:
            if exc.not_found:
                raise no_such_user(profile, user) from None
            raise
        rows = []
        for held in sorted(grants, key=lambda g: (g.resource_type, g.resource_id)):
            name = held.resource_id
            if held.resource_type == EXPERIMENT and held.resource_id != "*":
                try:
                    name = str(client.experiment_by_id(held.resource_id).get("name", ""))
                except MlflowApiError:
                    name = "(deleted?)"
            via = "direct" if held.direct else f"role {held.role}"
            rows.append((held.resource_type, held.resource_id, name, held.permission, via))
    if is_admin:
        print(f"{user} is an admin: every permission on everything")
    if rows:
        print_table(("TYPE", "ID", "NAME", "PERMISSION", "VIA"), rows)
    else:
        print(f"{user} holds no grants")
    print(
        f"anything else: default_permission {profile.default_permission} (profile {profile.name})"
    )
