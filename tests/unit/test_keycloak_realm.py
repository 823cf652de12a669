"""The Keycloak realm rendered from a profile, in-process: clients, mappers, groups, users, and
the secrets in it (exactly the profile's, whatever characters they hold)."""

import json
import shlex
import stat

import pytest

from mlflow_stack import keycloak_realm, oidc_profile, render
from mlflow_stack.errors import StackError
from mlflow_stack.files import parse_env_file
from mlflow_stack.layout import StackLayout
from mlflow_stack.profile import load_profile
from mlflow_stack.render import render_profile
from mlflow_stack.secrets import Secrets

HOSTILE = [
    "p%a$s@w:o/r#d'\"; ü ${X}",
    "quote'single\"double`back\\slash \\u0022 </script>",
    "unicode ü漢字🙂 [brackets] {braces} ; semicolon = equals",
    "${MLFLOW_STACK_DB_PASSWORD:-x} $HOME % ##",
]


def secrets(client="client-secret-123", machine="machine-secret-456", users="user-pass-789"):
    return Secrets(
        admin_password="admin-password-000",
        db_password="db-password-000",
        secret_key="flask-secret-000",
        oidc_client_secret=client,
        oidc_machine_secret=machine,
        oidc_dev_user_password=users,
    )


def sso(**environ):
    return load_profile("sso", environ=environ)


def client(realm, client_id):
    (found,) = [c for c in realm["clients"] if c["clientId"] == client_id]
    return found


def mapper(client_rep, kind):
    (found,) = [m for m in client_rep["protocolMappers"] if m["protocolMapper"] == kind]
    return found


def test_the_realm_is_the_one_the_issuer_names():
    profile = sso()
    realm = keycloak_realm.realm(profile, secrets())
    assert realm["realm"] == oidc_profile.KEYCLOAK_REALM
    assert oidc_profile.issuer(profile, "docker").endswith(f"/realms/{realm['realm']}")
    assert realm["enabled"] is True
    assert realm["accessTokenLifespan"] == profile.oidc_access_token_seconds


def test_the_browser_client_is_confidential_with_pkce_and_the_standard_flow_only():
    profile = sso()
    browser = client(keycloak_realm.realm(profile, secrets()), profile.oidc_client_id)
    assert browser["publicClient"] is False
    assert browser["secret"] == "client-secret-123"
    assert browser["standardFlowEnabled"] is True
    for flow in ("implicitFlowEnabled", "directAccessGrantsEnabled", "serviceAccountsEnabled"):
        assert browser[flow] is False, flow
    assert browser["attributes"]["pkce.code.challenge.method"] == "S256"
    callback = oidc_profile.redirect_uri(profile)
    assert callback == "https://127.0.0.1:5400/oidc/callback"
    assert browser["redirectUris"] == [callback, "https://localhost:5400/oidc/callback"]
    assert browser["attributes"]["post.logout.redirect.uris"] == (
        oidc_profile.post_logout_redirect_uri(profile)
    )
    assert browser["webOrigins"] == ["https://127.0.0.1:5400", "https://localhost:5400"]


def test_the_machine_client_has_client_credentials_only():
    profile = sso()
    machine = client(keycloak_realm.realm(profile, secrets()), profile.oidc_machine_client_id)
    assert machine["publicClient"] is False
    assert machine["secret"] == "machine-secret-456"
    assert machine["serviceAccountsEnabled"] is True
    for flow in ("standardFlowEnabled", "implicitFlowEnabled", "directAccessGrantsEnabled"):
        assert machine[flow] is False, flow
    # Keycloak's service-account-<client id> in preferred_username is what MLflow expects.
    assert profile.oidc_username_claim == keycloak_realm.KEYCLOAK_USERNAME_CLAIM
    assert not [m for m in machine["protocolMappers"] if m["name"] == "username"]


@pytest.mark.parametrize("client_id_key", ["oidc_client_id", "oidc_machine_client_id"])
def test_every_client_puts_group_names_and_the_api_audience_into_its_tokens(client_id_key):
    profile = sso()
    rep = client(keycloak_realm.realm(profile, secrets()), getattr(profile, client_id_key))
    groups = mapper(rep, "oidc-group-membership-mapper")["config"]
    assert groups["claim.name"] == profile.oidc_groups_claim
    assert groups["full.path"] == "false"
    for token in ("id.token.claim", "access.token.claim", "userinfo.token.claim"):
        assert groups[token] == "true", token
    audience = mapper(rep, "oidc-audience-mapper")["config"]
    assert audience["included.custom.audience"] == profile.oidc_api_audience
    assert audience["access.token.claim"] == "true"
    # An ID token's audience stays the client alone.
    assert audience["id.token.claim"] == "false"


def test_another_username_claim_gets_a_mapper_and_the_groups_claim_follows_the_profile():
    profile = sso(MLFLOW_STACK_OIDC_USERNAME_CLAIM="upn", MLFLOW_STACK_OIDC_GROUPS_CLAIM="roles")
    rep = client(keycloak_realm.realm(profile, secrets()), profile.oidc_client_id)
    username = mapper(rep, "oidc-usermodel-property-mapper")["config"]
    assert (username["claim.name"], username["user.attribute"]) == ("upn", "username")
    assert mapper(rep, "oidc-group-membership-mapper")["config"]["claim.name"] == "roles"


def test_groups_are_the_login_and_admin_groups_and_the_dev_users_groups_each_once():
    realm = keycloak_realm.realm(sso(), secrets())
    assert [g["name"] for g in realm["groups"]] == ["mlflow-users", "mlflow-admins"]
    # Groups of one user are joined by "+", so the environment's comma-separated list works.
    profile = sso(
        MLFLOW_STACK_OIDC_LOGIN_GROUP="",
        MLFLOW_STACK_OIDC_DEV_USERS="dora:readers+mlflow-admins+readers,erin:readers",
    )
    assert keycloak_realm.groups(profile) == ["mlflow-admins", "readers"]


def test_a_group_with_a_slash_is_refused():
    with pytest.raises(StackError, match="contains '/'"):
        keycloak_realm.groups(sso(MLFLOW_STACK_OIDC_DEV_USERS="dora:team/sub"))


def test_dev_users_are_rendered_with_their_groups_and_a_permanent_verified_password():
    profile = sso()
    users = {u["username"]: u for u in keycloak_realm.realm(profile, secrets())["users"]}
    assert sorted(users) == ["admin", "alice", "bob", "carol", "service-account-mlflow-machine"]
    # The machine client's service account is in the login group, which gates its tokens.
    service = users["service-account-mlflow-machine"]
    assert service["serviceAccountClientId"] == "mlflow-machine"
    assert service["groups"] == ["mlflow-users"] and "credentials" not in service
    alice = users["alice"]
    assert alice["groups"] == ["/mlflow-users", "/mlflow-admins"]
    assert users["carol"]["groups"] == []
    assert alice["enabled"] is True
    assert alice["emailVerified"] is True
    assert alice["email"] == "alice@example.test"
    assert alice["firstName"] and alice["lastName"]
    assert alice["credentials"] == [
        {"type": "password", "value": "user-pass-789", "temporary": False}
    ]


def test_a_profile_without_dev_users_or_login_group_gets_no_users_at_all():
    realm = keycloak_realm.realm(
        sso(MLFLOW_STACK_OIDC_DEV_USERS="", MLFLOW_STACK_OIDC_LOGIN_GROUP=""), secrets()
    )
    assert "users" not in realm


def test_an_upper_case_dev_user_is_refused():
    # Keycloak would keep it as "alice", and tokens would name another user than the profile.
    with pytest.raises(StackError, match="lower case"):
        keycloak_realm.realm(sso(MLFLOW_STACK_OIDC_DEV_USERS="Alice:mlflow-users"), secrets())


def _secret_values(node):
    """Every value the realm holds under a key Keycloak reads as a secret or credential."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("secret", "value") and isinstance(value, str):
                yield value
            else:
                yield from _secret_values(value)
    elif isinstance(node, list):
        for item in node:
            yield from _secret_values(item)


def test_the_realm_holds_exactly_the_profiles_oidc_secrets():
    given = secrets()
    text = keycloak_realm.realm_json(sso(), given)
    assert set(_secret_values(json.loads(text))) == {
        given.oidc_client_secret,
        given.oidc_machine_secret,
        given.oidc_dev_user_password,
    }
    for unrelated in (given.admin_password, given.db_password, given.secret_key):
        assert unrelated not in text


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_secrets_survive_the_json_round_trip(hostile):
    profile = sso()
    given = secrets(client=hostile, machine=hostile[::-1], users=hostile + "!")
    realm = json.loads(keycloak_realm.realm_json(profile, given))
    assert client(realm, profile.oidc_client_id)["secret"] == hostile
    assert client(realm, profile.oidc_machine_client_id)["secret"] == hostile[::-1]
    people = [u for u in realm["users"] if "serviceAccountClientId" not in u]
    assert {u["credentials"][0]["value"] for u in people} == {hostile + "!"}


def test_the_realm_json_is_stable():
    assert keycloak_realm.realm_json(sso(), secrets()) == keycloak_realm.realm_json(
        sso(), secrets()
    )


@pytest.mark.parametrize("value", [*HOSTILE, "", "plain", "-n"])
def test_the_shell_filter_gives_one_word(value):
    assert shlex.split(render.shell_word(value)) == [value]


def test_only_keycloak_profiles_on_docker_get_a_keycloak_service(stack_home):
    assert render.keycloak_service(sso(), secrets())
    for name in ("dev", "ci", "demo"):
        assert render.keycloak_service(load_profile(name, environ={}), secrets()) == {}
    # The dev provider replaces it on the local runtime; an external provider needs none.
    assert not oidc_profile.runs_keycloak(sso(), "local")
    external = sso(
        MLFLOW_STACK_OIDC_PROVIDER="external", MLFLOW_STACK_OIDC_ISSUER="https://idp.example"
    )
    assert render.keycloak_service(external, secrets()) == {}
    assert render.keycloak_service(sso(MLFLOW_STACK_OIDC_ENABLED="false"), secrets()) == {}


def test_the_keycloak_service_reaches_postgres_and_names_the_browser_issuer():
    profile = sso()
    environment = render.keycloak_service(profile, secrets())["environment"]
    assert environment["KC_DB_URL"] == "jdbc:postgresql://postgres:5432/keycloak"
    assert environment["KC_DB_USERNAME"] == profile.db_user
    assert environment["KC_DB_PASSWORD"] == "db-password-000"
    issuer = oidc_profile.issuer(profile, "docker")
    assert issuer == "http://127.0.0.1:5480/realms/mlflow"
    assert f"{environment['KC_HOSTNAME']}/realms/{oidc_profile.KEYCLOAK_REALM}" == issuer
    assert environment["KC_HOSTNAME_BACKCHANNEL_DYNAMIC"] == "true"
    assert environment[render.CONTAINER_KEYCLOAK_REALM_VARIABLE] == (
        keycloak_realm.realm_json(profile, secrets())
    )


def test_render_writes_the_realm_private_and_the_entry_point_without_secrets(stack_home):
    profile = sso()
    render_profile(profile)
    realm_file = profile.state_dir / StackLayout.KEYCLOAK_REALM
    entrypoint = profile.state_dir / StackLayout.KEYCLOAK_ENTRYPOINT
    assert stat.S_IMODE(realm_file.stat().st_mode) == 0o600
    realm = json.loads(realm_file.read_text())
    stored = parse_env_file(profile.state_dir / "secrets.env")
    assert (
        client(realm, profile.oidc_client_id)["secret"]
        == (stored["MLFLOW_STACK_OIDC_CLIENT_SECRET"])
    )
    script = entrypoint.read_text()
    assert not any(value in script for value in stored.values())
    init_sql = (profile.state_dir / StackLayout.POSTGRES_INIT_SQL).read_text()
    assert f"CREATE DATABASE {keycloak_realm.DATABASE} OWNER {profile.db_user};" in init_sql


def test_profiles_without_keycloak_render_no_keycloak_files(stack_home):
    profile = load_profile("ci", environ={})
    render_profile(profile)
    assert not (profile.state_dir / "keycloak").exists()
    assert keycloak_realm.DATABASE not in profile.layout.postgres_init_sql.read_text()
