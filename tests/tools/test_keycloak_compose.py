"""The Keycloak service of the sso profile, read back through the real Compose v2 binary
(`config --format json`, no engine), and its entry point run by the real bash."""

from __future__ import annotations

import json
import os
import stat
import subprocess

import pytest

from mlflow_stack import keycloak_realm, oidc_profile, render
from mlflow_stack.files import parse_env_file
from mlflow_stack.layout import StackLayout
from mlflow_stack.profile import load_profile
from mlflow_stack.render import render_profile
from mlflow_stack.validate import run_compose_config
from tests.rendering import compose_literal, service_argv

HOSTILE = [
    "p%a$s@w:o/r#d'\"; ü ${X}",
    "$$dollar$ and %(percent)s and %%",
    "quote'single\"double`back\\slash",
    "${MLFLOW_STACK_DB_PASSWORD:-x} $HOME %",
]


def rendered(name: str):
    profile = load_profile(name)
    render_profile(profile)
    return profile, json.loads(run_compose_config(profile.state_dir, "--format", "json"))


@pytest.fixture
def sso(stack_home):
    return rendered("sso")


def test_the_keycloak_service_runs_the_pinned_image(sso):
    profile, config = sso
    service = config["services"]["keycloak"]
    assert service["image"] == profile.keycloak_image
    repository, _, tag = profile.keycloak_image.rpartition(":")
    assert repository == "quay.io/keycloak/keycloak"
    assert tag.startswith("26.") and tag.count(".") == 2, tag
    assert service["command"] == ["start", "--import-realm"]  # production mode, not start-dev
    assert service["entrypoint"] == ["/bin/bash", render.CONTAINER_KEYCLOAK_ENTRYPOINT]


def test_the_healthcheck_asks_the_management_port_without_curl(sso):
    _, config = sso
    check = config["services"]["keycloak"]["healthcheck"]
    assert check["test"][:3] == ["CMD", "bash", "-c"]
    script = check["test"][3]
    assert f"/dev/tcp/127.0.0.1/{render.KEYCLOAK_MANAGEMENT_PORT}" in script
    assert "GET /health/ready" in script
    assert "curl" not in script and "wget" not in script
    assert config["services"]["keycloak"]["environment"]["KC_HEALTH_ENABLED"] == "true"


def test_keycloak_is_published_on_loopback_only(sso):
    profile, config = sso
    ports = config["services"]["keycloak"]["ports"]
    assert ports, "keycloak is not published"
    for port in ports:
        assert port["host_ip"] == "127.0.0.1", port
        assert port["published"] == str(profile.oidc_provider_port), port
        assert port["target"] == oidc_profile.KEYCLOAK_INTERNAL_PORT, port


def test_postgres_then_keycloak_then_mlflow(sso):
    _, config = sso
    services = config["services"]
    assert services["keycloak"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["mlflow"]["depends_on"]["keycloak"]["condition"] == "service_healthy"
    assert services["mlflow"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_keycloak_is_hardened_like_the_other_services(sso):
    profile, config = sso
    service = config["services"]["keycloak"]
    assert "no-new-privileges:true" in service["security_opt"]
    assert service["cap_drop"] == ["ALL"]
    assert not service.get("cap_add")
    assert service["restart"] == "unless-stopped"
    assert service["user"] == str(render.KEYCLOAK_UID)
    limits = service["deploy"]["resources"]["limits"]
    assert limits["memory"] and float(limits["cpus"]) == float(profile.cpu_limit)
    # The realm (secrets) lives in a tmpfs only Keycloak's user can enter.
    import_tmpfs = [
        t for t in service["tmpfs"] if t.startswith(render.CONTAINER_KEYCLOAK_IMPORT_DIR)
    ]
    assert import_tmpfs == [
        f"{render.CONTAINER_KEYCLOAK_IMPORT_DIR}:uid={render.KEYCLOAK_UID},gid=0,mode=0700"
    ]
    (mount,) = service["volumes"]
    assert mount["type"] == "bind" and mount["read_only"] is True
    assert mount["target"] == render.CONTAINER_KEYCLOAK_ENTRYPOINT


def test_the_realm_reaching_the_container_is_the_rendered_realm(sso):
    profile, config = sso
    environment = config["services"]["keycloak"]["environment"]
    realm_file = profile.state_dir / StackLayout.KEYCLOAK_REALM
    assert stat.S_IMODE(realm_file.stat().st_mode) == 0o600
    delivered = compose_literal(environment[render.CONTAINER_KEYCLOAK_REALM_VARIABLE])
    assert delivered == realm_file.read_text(encoding="utf-8")
    entrypoint = config["services"]["keycloak"]["volumes"][0]["source"]
    assert entrypoint == str(profile.state_dir / StackLayout.KEYCLOAK_ENTRYPOINT)


def test_the_issuer_keycloak_announces_is_the_one_mlflow_expects(sso):
    profile, config = sso
    environment = config["services"]["keycloak"]["environment"]
    announced = f"{environment['KC_HOSTNAME']}/realms/{oidc_profile.KEYCLOAK_REALM}"
    assert announced == oidc_profile.issuer(profile, "docker")
    assert environment["KC_HOSTNAME_BACKCHANNEL_DYNAMIC"] == "true"
    assert oidc_profile.discovery_url(profile, "docker").startswith(
        f"http://keycloak:{oidc_profile.KEYCLOAK_INTERNAL_PORT}/"
    )


def test_keycloak_has_its_own_database_in_the_stacks_postgres(sso):
    profile, config = sso
    environment = config["services"]["keycloak"]["environment"]
    secrets = parse_env_file(profile.state_dir / "secrets.env")
    assert environment["KC_DB"] == "postgres"
    assert environment["KC_DB_URL"] == "jdbc:postgresql://postgres:5432/keycloak"
    assert environment["KC_DB_USERNAME"] == profile.db_user
    assert compose_literal(environment["KC_DB_PASSWORD"]) == secrets["MLFLOW_STACK_DB_PASSWORD"]
    init_sql = (profile.state_dir / StackLayout.POSTGRES_INIT_SQL).read_text()
    assert f"CREATE DATABASE {keycloak_realm.DATABASE} OWNER {profile.db_user};" in init_sql


def test_no_secret_in_any_command_entrypoint_or_healthcheck(sso):
    profile, config = sso
    secrets = [v for v in parse_env_file(profile.state_dir / "secrets.env").values() if v]
    assert len(secrets) >= 6
    for name, service in config["services"].items():
        joined = service_argv(service)
        for secret in secrets:
            assert secret not in joined, f"a secret is on the command line of {name}"


@pytest.mark.parametrize("name", ["dev", "ci", "demo"])
def test_profiles_without_sso_have_no_keycloak(stack_home, name):
    profile, config = rendered(name)
    assert "keycloak" not in config["services"]
    assert "keycloak" not in config["services"]["mlflow"].get("depends_on", {})
    assert not (profile.state_dir / "keycloak").exists()


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_secrets_reach_keycloak_intact(stack_home, monkeypatch, hostile):
    monkeypatch.setenv("MLFLOW_STACK_OIDC_CLIENT_SECRET", hostile)
    monkeypatch.setenv("MLFLOW_STACK_OIDC_DEV_USER_PASSWORD", hostile + "!")
    monkeypatch.setenv("MLFLOW_STACK_DB_PASSWORD", hostile + "db")
    profile, config = rendered("sso")
    environment = config["services"]["keycloak"]["environment"]
    assert compose_literal(environment["KC_DB_PASSWORD"]) == hostile + "db"
    realm = json.loads(compose_literal(environment[render.CONTAINER_KEYCLOAK_REALM_VARIABLE]))
    (browser,) = [c for c in realm["clients"] if c["clientId"] == profile.oidc_client_id]
    assert browser["secret"] == hostile
    people = [u for u in realm["users"] if "serviceAccountClientId" not in u]
    assert {u["credentials"][0]["value"] for u in people} == {hostile + "!"}


def run_entrypoint(profile, tmp_path, realm_text):
    """The entry point's template with the container's paths moved under tmp_path, and a
    stand-in for kc.sh that prints its arguments and the environment Keycloak would get."""
    keycloak = dict(render.keycloak_service(profile, load_secrets_of(profile)))
    keycloak["realm_path"] = str(tmp_path / "import" / "mlflow-realm.json")
    keycloak["kc_sh"] = str(tmp_path / "kc.sh")
    (tmp_path / "kc.sh").write_text('#!/bin/bash\nprintf "arg:%s\\n" "$@"\nenv\n')
    (tmp_path / "kc.sh").chmod(0o755)
    (tmp_path / "import").mkdir(mode=0o700)
    script = tmp_path / "entrypoint.sh"
    template = render.template_environment().get_template("keycloak-entrypoint.sh.j2")
    script.write_text(template.render(profile=profile, keycloak=keycloak))
    environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    if realm_text is not None:
        environment[render.CONTAINER_KEYCLOAK_REALM_VARIABLE] = realm_text
    return subprocess.run(
        ["bash", str(script), "--marker-argument"],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    ), tmp_path / "import" / "mlflow-realm.json"


def load_secrets_of(profile):
    from mlflow_stack.secrets import load_secrets

    return load_secrets(profile, environ={})


def test_the_entry_point_writes_the_realm_privately_and_drops_the_variable(sso, tmp_path):
    profile, _ = sso
    realm_text = (profile.state_dir / StackLayout.KEYCLOAK_REALM).read_text(encoding="utf-8")
    result, written = run_entrypoint(profile, tmp_path, realm_text)
    assert result.returncode == 0, result.stderr
    assert written.read_text(encoding="utf-8") == realm_text
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    # What kc.sh (here env) gets: its arguments, and no realm in its environment.
    assert "arg:--marker-argument" in result.stdout.splitlines()
    assert render.CONTAINER_KEYCLOAK_REALM_VARIABLE not in result.stdout


def test_the_entry_point_refuses_to_start_without_a_realm(sso, tmp_path):
    profile, _ = sso
    result, written = run_entrypoint(profile, tmp_path, None)
    assert result.returncode == 1
    assert render.CONTAINER_KEYCLOAK_REALM_VARIABLE in result.stderr
    assert not written.exists()


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_the_healthcheck_script_reads_the_status_with_bash_alone(status, healthy):
    import http.server
    import threading

    class Ready(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(status if self.path == "/health/ready" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ready)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        script = render.KEYCLOAK_HEALTHCHECK.replace(
            f"/{render.KEYCLOAK_MANAGEMENT_PORT}", f"/{port}"
        )
        result = subprocess.run(["bash", "-c", script], capture_output=True, timeout=10)
    finally:
        server.shutdown()
    assert (result.returncode == 0) is healthy, result.stderr
