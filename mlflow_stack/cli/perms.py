"""The bodies of the perms.* tasks: what a user may do on one MLflow resource.

Which resource a selector flag names, and which levels mean something on it, is
mlflow_stack/resources.py; here are the grant, the revoke and the listing.
"""

from __future__ import annotations

from mlflow_stack import resources
from mlflow_stack.cli.inputs import check_username, parse_level
from mlflow_stack.cli.output import print_table
from mlflow_stack.cli.users import no_such_user, require_user
from mlflow_stack.client import AdminClient, Grant, MlflowApiError
from mlflow_stack.errors import StackError
from mlflow_stack.profile import load_profile
from mlflow_stack.resources import Resource


def _direct_grant(client: AdminClient, username: str, resource: Resource) -> Grant | None:
    _, grants = client.list_permissions(username)
    for grant in grants:
        if grant.direct and (grant.resource_type, grant.resource_id) == (
            resource.type,
            resource.id,
        ):
            return grant
    return None


def grant(profile_name: str, user: str, level: str, **selectors: str | None) -> None:
    """Give `user` a level on the one resource a selector (experiment=, prompt=, …) names."""
    profile = load_profile(profile_name)
    check_username(user)
    permission = parse_level(level)
    kind, value = resources.selected(selectors)
    tier = resources.tier_type(value) if kind.parameter == "tier" else None
    resources.check_level(kind, permission, tier)
    with AdminClient.for_profile(profile) as client:
        require_user(client, user)
        resource = resources.resolve(client, kind, value)
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


def revoke(profile_name: str, user: str, **selectors: str | None) -> None:
    """Remove `user`'s own grant on the one resource a selector names."""
    profile = load_profile(profile_name)
    check_username(user)
    kind, value = resources.selected(selectors)
    if kind.parameter == "tier":
        resources.tier_type(value)
    with AdminClient.for_profile(profile) as client:
        require_user(client, user)
        resource = resources.resolve(client, kind, value, revoking=True)
        try:
            client.revoke(user, resource.type, resource.id)
        except MlflowApiError as exc:
            if exc.not_found:
                print(f"{user} had no grant on {resource.label}; nothing changed")
                return
            raise
    if not resource.enforced:
        fallback = "MLflow never checked it, so what the user may do is unchanged"
    elif resource.id == "*":
        fallback = "what the user holds on each one's parent decides again"
    else:
        fallback = f"default_permission ({profile.default_permission}) applies again"
    print(f"revoked the grant of {user} on {resource.label}: {fallback}")


def list_grants(profile_name: str, user: str) -> None:
    """Every grant `user` holds, of every resource type, direct or through a role."""
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
            name = resources.display_name(client, held.resource_type, held.resource_id)
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
