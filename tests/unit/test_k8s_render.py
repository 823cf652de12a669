"""The Kubernetes output (render --target kubernetes), read back as YAML in-process."""

import configparser
import re
import stat
from pathlib import Path

import pytest
import yaml
from sqlalchemy.engine import make_url

from mlflow_stack import k8s
from mlflow_stack.errors import StackError
from mlflow_stack.files import parse_env_file
from mlflow_stack.profile import load_profile
from mlflow_stack.secrets import sendable_in_basic_auth
from tests.rendering import HOSTILE_PASSWORDS

DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def render_k8s(monkeypatch, name="ci", **environ):
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    profile = load_profile(name)
    k8s.render_profile(profile)
    return profile


def objects(profile):
    """Every rendered object by kind (kustomization.yaml included)."""
    found = {}
    for path in sorted(profile.layout.k8s_dir.glob("*.yaml")):
        document = yaml.load(path.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)
        found.setdefault(document["kind"], []).append(document)
    return {kind: docs[0] if len(docs) == 1 else docs for kind, docs in found.items()}


def pod_specs(found):
    return [
        found["Deployment"]["spec"]["template"]["spec"],
        found["Job"]["spec"]["template"]["spec"],
    ]


def containers(found):
    return [
        c for spec in pod_specs(found) for c in spec["containers"] + spec.get("initContainers", [])
    ]


def selects(selector, labels):
    return all(labels.get(key) == value for key, value in selector.items())


@pytest.fixture
def ci(stack_home, monkeypatch):
    return render_k8s(monkeypatch, "ci")


def test_kustomization_lists_exactly_the_rendered_manifests(ci):
    listed = objects(ci)["Kustomization"]["resources"]
    on_disk = sorted(
        p.name for p in ci.layout.k8s_dir.glob("*.yaml") if p.name != "kustomization.yaml"
    )
    assert sorted(listed) == on_disk
    assert "hpa.yaml" not in listed  # k8s_max_replicas = 0


def test_selectors_match_the_pods_and_the_service_and_pdb_find_them(ci):
    found = objects(ci)
    deployment = found["Deployment"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selects(deployment["spec"]["selector"]["matchLabels"], pod_labels)
    assert selects(found["Service"]["spec"]["selector"], pod_labels)
    assert selects(found["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"], pod_labels)
    # The Service must not also pick the migration Job's pod.
    job_labels = found["Job"]["spec"]["template"]["metadata"]["labels"]
    assert not selects(found["Service"]["spec"]["selector"], job_labels)
    assert selects(found["NetworkPolicy"]["spec"]["podSelector"]["matchLabels"], pod_labels)
    assert selects(found["NetworkPolicy"]["spec"]["podSelector"]["matchLabels"], job_labels)
    port = found["Service"]["spec"]["ports"][0]["targetPort"]
    names = [p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]]
    assert port in names
    ingress_backend = found["Ingress"]["spec"]["rules"][0]["http"]["paths"][0]["backend"]
    assert ingress_backend["service"]["name"] == found["Service"]["metadata"]["name"]


@pytest.mark.parametrize("replicas", ["1", "2", "5"])
def test_pdb_is_below_replicas_and_replicas_come_from_the_profile(
    stack_home, monkeypatch, replicas
):
    found = objects(render_k8s(monkeypatch, "ci", MLFLOW_STACK_K8S_REPLICAS=replicas))
    assert found["Deployment"]["spec"]["replicas"] == int(replicas)
    assert found["PodDisruptionBudget"]["spec"]["minAvailable"] < int(replicas)


def test_autoscaler_only_when_asked_and_above_replicas(stack_home, monkeypatch):
    found = objects(render_k8s(monkeypatch, "ci", MLFLOW_STACK_K8S_MAX_REPLICAS="6"))
    hpa = found["HorizontalPodAutoscaler"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert hpa["spec"]["scaleTargetRef"]["name"] == found["Deployment"]["metadata"]["name"]
    assert "hpa.yaml" in found["Kustomization"]["resources"]
    # Turned off again, the stale manifest goes too.
    monkeypatch.setenv("MLFLOW_STACK_K8S_MAX_REPLICAS", "0")
    profile = render_k8s(monkeypatch, "ci")
    assert not (profile.layout.k8s_dir / "hpa.yaml").exists()
    with pytest.raises(StackError, match="k8s_max_replicas"):
        monkeypatch.setenv("MLFLOW_STACK_K8S_MAX_REPLICAS", "2")
        load_profile("ci")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MLFLOW_STACK_K8S_REPLICAS", "0"),
        ("MLFLOW_STACK_K8S_NAMESPACE", "ML_flow"),
        ("MLFLOW_STACK_K8S_NAMESPACE", "-mlflow"),
        ("MLFLOW_STACK_K8S_INGRESS_HOST", "MLflow.Example.com"),
        ("MLFLOW_STACK_K8S_TLS_SECRET", "tls secret"),
        ("MLFLOW_STACK_K8S_POSTGRES_SSLMODE", "on"),
        ("MLFLOW_STACK_K8S_ARTIFACTS_SIZE", "10GB"),
        ("MLFLOW_STACK_K8S_ARTIFACTS_ACCESS_MODE", "ReadOnlyMany"),
        ("MLFLOW_STACK_K8S_CPU_REQUEST", "lots"),
        ("MLFLOW_STACK_K8S_IMAGE", "image with spaces"),
    ],
)
def test_bad_k8s_keys_are_refused(stack_home, monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    key = variable.removeprefix("MLFLOW_STACK_").lower()
    with pytest.raises(StackError, match=key):
        load_profile("ci")


@pytest.mark.parametrize("name", ["dev", "ci", "demo"])
def test_every_name_is_dns_1123(stack_home, monkeypatch, name):
    found = objects(render_k8s(monkeypatch, name))
    for kind, documents in found.items():
        if kind == "Kustomization":
            continue
        for document in documents if isinstance(documents, list) else [documents]:
            metadata = document["metadata"]
            pattern = DNS_LABEL if kind in ("Namespace", "Service") else DNS_SUBDOMAIN
            assert pattern.fullmatch(metadata["name"]), (kind, metadata["name"])
            assert len(metadata["name"]) <= 63
    for container in containers(found):
        assert DNS_LABEL.fullmatch(container["name"])
    assert found["Job"]["metadata"]["name"] == "mlflow-migrate-" + k8s.mlflow_version().replace(
        ".", "-"
    )


def test_every_referenced_secret_key_exists(ci):
    found = objects(ci)
    secret = found["Secret"]
    keys = set(secret["stringData"])
    referenced = [
        item["valueFrom"]["secretKeyRef"]
        for container in containers(found)
        for item in container.get("env", [])
        if "valueFrom" in item
    ]
    assert len(referenced) >= 6
    for ref in referenced:
        assert ref["name"] == secret["metadata"]["name"]
        assert ref["key"] in keys, ref["key"]


@pytest.mark.parametrize("password", HOSTILE_PASSWORDS)
def test_secret_ini_parses_to_the_hostile_passwords_and_nothing_leaks(
    stack_home, monkeypatch, password
):
    # The admin's password must also pass basic auth (Latin-1); the database's may be anything.
    admin = password if sendable_in_basic_auth(password) else "latin-1 only: %(x)s & $HOME"
    profile = render_k8s(
        monkeypatch,
        "ci",
        MLFLOW_STACK_ADMIN_PASSWORD=admin,
        MLFLOW_STACK_DB_PASSWORD=password,
        MLFLOW_STACK_SECRET_KEY=password[::-1] + "-flask-key",
    )
    found = objects(profile)
    data = found["Secret"]["stringData"]
    # As MLflow reads it: a plain ConfigParser, interpolation on.
    parser = configparser.ConfigParser()
    parser.read_string(data[k8s.AUTH_CONFIG_KEY])
    assert parser["mlflow"]["admin_password"] == admin
    for uri in (data["MLFLOW_BACKEND_STORE_URI"], data[k8s.AUTH_DATABASE_VARIABLE]):
        url = make_url(uri)
        assert url.password == password
        assert (url.host, url.port) == (profile.k8s_postgres_host, profile.k8s_postgres_port)
        assert url.query["sslmode"] == profile.k8s_postgres_sslmode
    assert make_url(parser["mlflow"]["database_uri"]).password == password
    assert data["MLFLOW_FLASK_SERVER_SECRET_KEY"] == password[::-1] + "-flask-key"

    secrets = [v for v in parse_env_file(profile.layout.secrets_file).values() if len(v) >= 8]
    assert password in secrets
    exposed = []
    for container in containers(found):
        exposed += container.get("command", []) + container.get("args", [])
        exposed += [item["value"] for item in container.get("env", []) if "value" in item]
    for kind, documents in found.items():
        for document in documents if isinstance(documents, list) else [documents]:
            metadata = document.get("metadata") or {}
            exposed += list((metadata.get("annotations") or {}).values())
            template = (document.get("spec") or {}).get("template") or {}
            exposed += list(((template.get("metadata") or {}).get("annotations") or {}).values())
            if kind == "ConfigMap":
                exposed += list(document.get("data", {}).values())
    text = "\0".join(exposed)
    assert "checksum/secret" in str(found["Deployment"]["spec"]["template"]["metadata"])
    for secret in secrets:
        assert secret not in text
        assert secret[::-1] not in text


def test_only_the_secret_is_private(ci):
    for path in ci.layout.k8s_dir.glob("*.yaml"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o600 if path.name == "secret.yaml" else 0o644), path.name


def test_a_changed_secret_rolls_the_pods(stack_home, monkeypatch):
    first = objects(render_k8s(monkeypatch, "ci"))
    again = objects(render_k8s(monkeypatch, "ci"))
    changed = objects(
        render_k8s(monkeypatch, "ci", MLFLOW_STACK_ADMIN_PASSWORD="another-password-123")
    )

    def checksum(found):
        return found["Deployment"]["spec"]["template"]["metadata"]["annotations"]["checksum/secret"]

    assert checksum(first) == checksum(again)
    assert checksum(changed) != checksum(first)


@pytest.mark.parametrize("name", ["dev", "ci", "demo"])
def test_rendering_twice_gives_identical_bytes(stack_home, monkeypatch, name):
    profile = render_k8s(monkeypatch, name)
    first = {p: p.read_bytes() for p in profile.layout.k8s_dir.iterdir()}
    render_k8s(monkeypatch, name)
    assert first == {p: p.read_bytes() for p in profile.layout.k8s_dir.iterdir()}


def test_pods_are_hardened(ci):
    found = objects(ci)
    for spec in pod_specs(found):
        assert spec["automountServiceAccountToken"] is False
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == 10001
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in containers(found):
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
    server = found["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert server[probe]["httpGet"]["path"] == "/health"
    args = server["args"]
    assert args[args.index("--workers") + 1] == "1"
    assert ci.k8s_ingress_host in args[args.index("--allowed-hosts") + 1].split(",")
    # The entry point writes auth_config.ini inside a writable in-memory volume.
    env = {item["name"]: item.get("value") for item in server["env"]}
    mounts = {m["mountPath"]: m["name"] for m in server["volumeMounts"]}
    config_folder = str(Path(env["MLFLOW_AUTH_CONFIG_PATH"]).parent.parent)
    assert config_folder in mounts
    volumes = {v["name"]: v for v in found["Deployment"]["spec"]["template"]["spec"]["volumes"]}
    assert volumes[mounts[config_folder]]["emptyDir"]["medium"] == "Memory"
    tls = found["Ingress"]["spec"]["tls"][0]
    assert tls == {"hosts": [ci.k8s_ingress_host], "secretName": ci.k8s_tls_secret}


def test_migration_job_reads_the_urls_from_the_environment(ci):
    job = objects(ci)["Job"]["spec"]["template"]["spec"]["containers"][0]
    names = {item["name"] for item in job["env"]}
    assert {"MLFLOW_BACKEND_STORE_URI", k8s.AUTH_DATABASE_VARIABLE} <= names
    assert job["args"] == k8s.migrate_command()
    assert job["args"] == ["python", "-m", "mlflow_stack.container.migrate"]
    compile(k8s.WAIT_PROGRAM, "<manifest>", "exec")


def test_a_provider_the_cluster_does_not_run_is_refused(stack_home, monkeypatch):
    with pytest.raises(StackError, match="oidc_provider = external"):
        render_k8s(monkeypatch, "sso")


def test_single_sign_on_sends_the_browser_back_to_the_ingress(stack_home, monkeypatch):
    profile = render_k8s(
        monkeypatch,
        "sso",
        MLFLOW_STACK_OIDC_PROVIDER="external",
        MLFLOW_STACK_OIDC_ISSUER="https://idp.example.com/realms/mlflow",
        MLFLOW_STACK_OIDC_CLIENT_SECRET="unit-client-secret-0123456789abcdef",
        MLFLOW_STACK_OIDC_MACHINE_SECRET="unit-machine-secret-0123456789abcdef",
    )
    found = objects(profile)
    parser = configparser.ConfigParser()
    parser.read_string(found["Secret"]["stringData"][k8s.AUTH_CONFIG_KEY])
    oidc = parser["mlflow_stack.oidc"]
    assert oidc["redirect_uri"] == f"https://{profile.k8s_ingress_host}/oidc/callback"
    assert oidc["issuer"] == "https://idp.example.com/realms/mlflow"
    assert oidc["client_secret"] == "unit-client-secret-0123456789abcdef"
    # The pods may reach the provider (HTTPS) only where single sign-on is on.
    egress_ports = [
        p["port"] for rule in found["NetworkPolicy"]["spec"]["egress"] for p in rule["ports"]
    ]
    assert 443 in egress_ports
    assert 443 not in [
        p["port"]
        for rule in objects(render_k8s(monkeypatch, "ci"))["NetworkPolicy"]["spec"]["egress"]
        for p in rule["ports"]
    ]


def test_one_worker_per_pod_whatever_the_profile_says(stack_home, monkeypatch):
    found = objects(render_k8s(monkeypatch, "ci", MLFLOW_STACK_WORKERS="4"))
    args = found["Deployment"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--workers") + 1] == "1"
