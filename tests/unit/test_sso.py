"""Single sign-on on the server, in-process: identities and sessions over an SQLite auth
database, the login routes with a stand-in provider, and the hook's decisions."""

from __future__ import annotations

import base64
import hashlib
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import flask
import pytest
import sqlalchemy as sa

from mlflow_stack.auth import hook, sso, sso_auth
from mlflow_stack.auth.auth_db import AuthDatabase
from mlflow_stack.auth.jwt_access import JwtAccessSettings, VerifiedToken
from mlflow_stack.auth.oidc_config import OidcConfig
from mlflow_stack.auth.schema import users
from mlflow_stack.auth.sso_store import SsoStore
from mlflow_stack.auth.token_format import utcnow
from tests.auth_tables import create_auth_tables

ISSUER = "http://127.0.0.1:5480"
CONFIG = OidcConfig(
    issuer=ISSUER,
    discovery_url=ISSUER + "/.well-known/openid-configuration",
    client_id="mlflow",
    client_secret="client-secret",
    api_audience="urn:mlflow-stack:api",
    scopes="openid profile",
    username_claim="preferred_username",
    groups_claim="groups",
    login_group="mlflow-users",
    admin_group="mlflow-admins",
    admin_from_tokens=False,
    passwords=True,
    session_seconds=3600,
    redirect_uri="http://127.0.0.1:5400/oidc/callback",
    post_logout_redirect_uri="http://127.0.0.1:5400/oidc/logged-out",
    profile_admin="admin",
)


class FakeProvider:
    """What Provider offers BrowserLogin, answering as a provider would, without a network."""

    settings = JwtAccessSettings(
        issuer=ISSUER, audience="urn:mlflow-stack:api", browser_client_id="mlflow"
    )

    def __init__(self) -> None:
        self.identity = VerifiedToken("sub-1", "alice", ("mlflow-users",), ISSUER, 0, {})
        self.exchanged: list[tuple[str, str]] = []

    def authorization_url(self, state: str, nonce: str, code_challenge: str) -> str:
        return f"{ISSUER}/auth?state={state}&nonce={nonce}&code_challenge={code_challenge}"

    def exchange_code(self, code: str, code_verifier: str) -> dict[str, str]:
        self.exchanged.append((code, code_verifier))
        return {"id_token": "id-token-of-" + self.identity.username}

    def keys(self) -> object:
        return object()

    def logout_url(self, id_token: str | None) -> str:
        return f"{ISSUER}/session/end?id_token_hint={id_token}"


@pytest.fixture
def store(tmp_path) -> SsoStore:
    database = AuthDatabase(f"sqlite:///{tmp_path / 'auth.db'}")
    create_auth_tables(database.engine())
    with database.engine().begin() as conn:
        conn.execute(users.insert().values(username="admin", password_hash="x", is_admin=True))
        conn.execute(users.insert().values(username="alice", password_hash="x", is_admin=False))
    return SsoStore(database)


@pytest.fixture
def login(store, monkeypatch) -> sso.BrowserLogin:
    provider = FakeProvider()
    monkeypatch.setattr(
        sso, "verify_id_token", lambda token, settings, keys, *, nonce: provider.identity
    )
    return sso.BrowserLogin(CONFIG, provider, store)  # type: ignore[arg-type]


@pytest.fixture
def app() -> flask.Flask:
    app = flask.Flask("sso-test")
    app.secret_key = "the-same-on-every-worker"
    return app


def bind(store: SsoStore, subject: str, name: str, make_admin: bool | None = None):
    return store.bind_identity(
        ISSUER, subject, name, utcnow(), reserved=frozenset({"admin"}), make_admin=make_admin
    )


def test_an_identity_gets_a_user_of_its_own_never_a_local_users_name(store):
    assert bind(store, "sub-a", "admin") == ("admin@sso", False)  # not the profile's admin
    assert bind(store, "sub-b", "alice") == ("alice@sso", False)  # a local alice exists
    assert bind(store, "sub-c", "bob") == ("bob", False)
    assert bind(store, "sub-d", "bob") == ("bob@sso", False)
    assert bind(store, "sub-c", "renamed-at-the-idp") == ("bob", False)  # bound by subject
    assert bind(store, "sub-e", "we ird/name") == ("we-ird-name", False)


def test_admin_group_membership_grants_and_revokes_admin_at_each_login(store):
    assert bind(store, "sub-a", "dora", make_admin=True) == ("dora", True)
    assert store.user("dora") == (store.user("dora")[0], True)
    assert bind(store, "sub-a", "dora", make_admin=False) == ("dora", False)
    assert store.user("dora")[1] is False
    assert bind(store, "sub-a", "dora", make_admin=None) == ("dora", False)


def test_sessions_expire_end_and_go_with_their_user(store):
    now = utcnow()
    value = store.create_session("alice", timedelta(hours=1), now, "id-token")
    assert store.session_user(value, now).username == "alice"
    assert store.session_user(value, now + timedelta(hours=2)) is None
    assert store.session_user("not-a-session", now) is None
    store.end_session(value)
    assert store.session_user(value, now) is None
    other = store.create_session("alice", timedelta(hours=1), now, None)
    with store._database.engine().begin() as conn:
        conn.execute(sa.delete(users).where(users.c.username == "alice"))
    assert store.session_user(other, now) is None


def start(app, login) -> tuple[str, str, str]:
    """GET /oidc/login: returns (state, challenge, login cookie)."""
    with app.test_request_context("/oidc/login?next=/%23/experiments"):
        response = login.handle(flask.request)
    location = urlsplit(response.headers["Location"])
    query = parse_qs(location.query)
    cookie = response.headers["Set-Cookie"].split(";")[0].split("=", 1)[1]
    assert "HttpOnly" in response.headers["Set-Cookie"]
    assert "SameSite=Lax" in response.headers["Set-Cookie"]
    return query["state"][0], query["code_challenge"][0], cookie


def callback(app, login, state: str, cookie: str, code: str = "the-code"):
    path = f"/oidc/callback?code={code}&state={state}"
    with app.test_request_context(path, headers={"Cookie": f"{sso.LOGIN_COOKIE}={cookie}"}):
        return login.handle(flask.request)


def test_login_uses_pkce_s256_and_the_callback_starts_a_session(app, login, store):
    state, challenge, cookie = start(app, login)
    response = callback(app, login, state, cookie)
    assert response.status_code == 302 and response.headers["Location"] == "/#/experiments"
    code, verifier = login.provider.exchanged[0]
    digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    assert (code, digest.decode()) == ("the-code", challenge)
    session = next(
        part.split(";")[0].split("=", 1)[1]
        for part in response.headers.getlist("Set-Cookie")
        if part.startswith(sso.SESSION_COOKIE)
    )
    # A first login of the IdP's alice, while a local alice exists: a user of its own.
    assert store.session_user(session, utcnow()).username == "alice@sso"


def test_a_wrong_state_or_a_missing_login_cookie_is_refused(app, login):
    state, _, cookie = start(app, login)
    assert callback(app, login, "forged", cookie).status_code == 400
    assert callback(app, login, state, "tampered" + cookie).status_code == 400
    assert login.provider.exchanged == []


def test_the_login_group_gates_and_the_admin_group_promotes(app, login, store):
    login.provider.identity = VerifiedToken("sub-9", "erin", (), ISSUER, 0, {})
    state, _, cookie = start(app, login)
    refused = callback(app, login, state, cookie)
    assert refused.status_code == 403 and store.user("erin") is None
    login.provider.identity = VerifiedToken(
        "sub-9", "erin", ("mlflow-users", "mlflow-admins"), ISSUER, 0, {}
    )
    state, _, cookie = start(app, login)
    assert callback(app, login, state, cookie).status_code == 302
    assert store.user("erin")[1] is True


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/", "/\\evil", ""])
def test_next_is_always_a_path_of_this_server(target):
    assert sso._safe_next(target) == "/"
    assert sso._safe_next("/#/models") == "/#/models"


@pytest.fixture
def hook_with_sso(store, monkeypatch):
    context = sso_auth.SingleSignOn(CONFIG, FakeProvider(), store)  # type: ignore[arg-type]
    monkeypatch.setattr(sso_auth, "_context", [context])
    monkeypatch.setattr(hook, "_database", store._database)
    return context


def test_the_hook_takes_a_session_cookie_and_sends_page_loads_to_the_login(
    app, store, hook_with_sso
):
    value = store.create_session("alice", timedelta(hours=1), utcnow(), None)
    with app.test_request_context("/", headers={"Cookie": f"{sso.SESSION_COOKIE}={value}"}):
        assert hook.authenticate().username == "alice"
        assert hook.method_of_this_request() == hook.METHOD_SESSION
    with app.test_request_context("/", headers={"Sec-Fetch-Mode": "navigate"}):
        page = hook.authenticate()
    assert page.status_code == 302 and page.headers["Location"] == "/oidc/login?next=%2F"
    with app.test_request_context("/ajax-api/2.0/mlflow/experiments/search"):
        assert hook.authenticate().status_code == 401


def test_with_passwords_off_only_the_profiles_admin_keeps_one(app, store, monkeypatch):
    from werkzeug.security import generate_password_hash

    with store._database.engine().begin() as conn:
        conn.execute(
            users.update().values(
                # A cheap method: what is checked here is who may use a password at all.
                password_hash=generate_password_hash(
                    "pw-of-everyone-1", method="pbkdf2:sha256:1000"
                )
            )
        )
    config = OidcConfig(**{**CONFIG.__dict__, "passwords": False})
    context = sso_auth.SingleSignOn(config, FakeProvider(), store)  # type: ignore[arg-type]
    monkeypatch.setattr(sso_auth, "_context", [context])
    monkeypatch.setattr(hook, "_database", store._database)

    def basic(name: str) -> dict[str, str]:
        pair = base64.b64encode(f"{name}:pw-of-everyone-1".encode()).decode()
        return {"Authorization": f"Basic {pair}"}

    with app.test_request_context("/api/2.0/mlflow/experiments/search", headers=basic("alice")):
        assert hook.authenticate().status_code == 401
    with app.test_request_context("/api/2.0/mlflow/experiments/search", headers=basic("admin")):
        assert hook.authenticate().username == "admin"


def delete_user(store: SsoStore, username: str) -> None:
    with store._database.engine().begin() as conn:
        conn.execute(sa.delete(users).where(users.c.username == username))


def test_an_identity_whose_user_an_admin_deleted_stays_refused(store):
    from mlflow_stack.auth.sso_store import IdentityDeleted

    assert bind(store, "sub-z", "zoe") == ("zoe", False)
    delete_user(store, "zoe")
    with pytest.raises(IdentityDeleted):
        bind(store, "sub-z", "zoe")
    with pytest.raises(IdentityDeleted):
        store.identity_user(ISSUER, "sub-z")
    assert store.user("zoe") is None  # no new user was made for it


def test_a_bearer_jwt_of_a_deleted_user_is_refused(store, monkeypatch):
    context = sso_auth.SingleSignOn(CONFIG, FakeProvider(), store)  # type: ignore[arg-type]
    verified = VerifiedToken("sub-y", "yan", ("mlflow-users",), ISSUER, 0, {})
    monkeypatch.setattr(sso_auth, "verify_access_token", lambda token, settings, keys: verified)
    assert sso_auth.authenticate_jwt("a.jwt.token", context).username == "yan"
    delete_user(store, "yan")
    assert sso_auth.authenticate_jwt("a.jwt.token", context) is None
    assert store.user("yan") is None


def test_a_browser_login_of_a_deleted_user_is_refused(app, login, store):
    login.provider.identity = VerifiedToken("sub-x", "xia", ("mlflow-users",), ISSUER, 0, {})
    state, _, cookie = start(app, login)
    assert callback(app, login, state, cookie).status_code == 302
    delete_user(store, "xia")
    state, _, cookie = start(app, login)
    refused = callback(app, login, state, cookie)
    assert refused.status_code == 403 and store.user("xia") is None


def test_a_jwt_when_no_signing_keys_can_be_had_is_503_not_401(app, store, monkeypatch):
    from mlflow.exceptions import MlflowException

    from mlflow_stack.auth.jwt_access import KeysUnavailable

    class ProviderWithoutKeys(FakeProvider):
        def keys(self) -> object:
            raise KeysUnavailable("the JWKS endpoint does not answer and no key is cached")

    context = sso_auth.SingleSignOn(CONFIG, ProviderWithoutKeys(), store)  # type: ignore[arg-type]
    monkeypatch.setattr(sso_auth, "_context", [context])
    monkeypatch.setattr(hook, "_database", store._database)
    headers = {"Authorization": "Bearer eyJhbGciOiJSUzI1NiJ9.e30.c2ln"}
    with (
        app.test_request_context("/api/2.0/mlflow/experiments/search", headers=headers),
        pytest.raises(MlflowException) as raised,
    ):
        hook.authenticate()
    assert raised.value.get_http_status_code() == 503
