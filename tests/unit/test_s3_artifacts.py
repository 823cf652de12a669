"""Artifacts on S3 (artifacts_store = "s3"), rendered for every runtime and read back in-process:
the destination, the credentials by reference, and the one-line refusals of bad values."""

from __future__ import annotations

import shlex
import stat

import pytest
import yaml

from mlflow_stack import k8s, render, s3
from mlflow_stack.errors import StackError
from mlflow_stack.files import parse_env_file
from mlflow_stack.profile import load_profile
from tests.unit import test_k8s_render as k8s_checks

ACCESS_KEY = "AKIAUNITS3DISTINCT42"
SECRET_KEY = "unit/S3+secret=Value-9f8e7d6c5b4a"
BUCKET = "mlflow-unit-artifacts"
PREFIX = "team-a/runs"
ENDPOINT = "http://127.0.0.1:9000"


@pytest.fixture
def credentials(tmp_path):
    """A shared-credentials file with distinctive values, mode 0600."""
    path = tmp_path / "aws-credentials"
    path.write_text(
        f"[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n",
        encoding="utf-8",
    )
    path.chmod(0o600)
    return path


@pytest.fixture
def s3_env(stack_home, monkeypatch, credentials):
    """An s3 profile (ci) with every S3 key set."""
    environ = {
        "MLFLOW_STACK_ARTIFACTS_STORE": "s3",
        "MLFLOW_STACK_S3_BUCKET": BUCKET,
        "MLFLOW_STACK_S3_PREFIX": PREFIX,
        "MLFLOW_STACK_S3_ENDPOINT_URL": ENDPOINT,
        "MLFLOW_STACK_S3_REGION": "eu-west-1",
        "MLFLOW_STACK_S3_CREDENTIALS_FILE": str(credentials),
        "MLFLOW_STACK_K8S_S3_CREDENTIALS_SECRET": "mlflow-s3-credentials",
    }
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    return environ


def render_all(name="ci"):
    profile = load_profile(name)
    render.render_profile(profile)
    k8s.render_profile(profile)
    return profile


def destination_of(args):
    return args[args.index("--artifacts-destination") + 1]


def compose_mlflow(profile):
    document = yaml.safe_load(profile.layout.compose_file.read_text(encoding="utf-8"))
    return document, document["services"]["mlflow"]


def supervisord_command(profile):
    text = profile.layout.supervisord_conf.read_text(encoding="utf-8")
    line = next(
        line for line in text.splitlines() if line.startswith("command=") and "mlflow" in line
    )
    return shlex.split(line.removeprefix("command="))


def deployment(profile):
    return k8s_checks.objects(profile)["Deployment"]["spec"]["template"]["spec"]


def test_local_runtime_writes_to_the_bucket_with_the_credentials_path(s3_env, credentials):
    profile = render_all()
    assert destination_of(supervisord_command(profile)) == f"s3://{BUCKET}/{PREFIX}"
    assert "--serve-artifacts" in supervisord_command(profile)
    env = parse_env_file(profile.layout.local_mlflow_env)
    assert env["AWS_SHARED_CREDENTIALS_FILE"] == str(credentials.resolve())
    assert env["MLFLOW_S3_ENDPOINT_URL"] == ENDPOINT
    assert env["AWS_DEFAULT_REGION"] == "eu-west-1"


def test_compose_mounts_the_file_as_a_secret(s3_env, credentials):
    profile = render_all()
    document, mlflow = compose_mlflow(profile)
    assert destination_of(mlflow["command"]) == f"s3://{BUCKET}/{PREFIX}"
    assert "--serve-artifacts" in mlflow["command"]
    assert mlflow["environment"]["AWS_SHARED_CREDENTIALS_FILE"] == "/run/secrets/s3_credentials"
    assert mlflow["environment"]["MLFLOW_S3_ENDPOINT_URL"] == ENDPOINT
    assert mlflow["environment"]["AWS_DEFAULT_REGION"] == "eu-west-1"
    assert mlflow["secrets"] == ["s3_credentials"]
    assert document["secrets"]["s3_credentials"] == {"file": str(credentials.resolve())}


def test_kubernetes_mounts_the_users_secret_and_drops_the_volume(s3_env):
    profile = render_all()
    found = k8s_checks.objects(profile)
    spec = deployment(profile)
    server = spec["containers"][0]
    assert destination_of(server["args"]) == f"s3://{BUCKET}/{PREFIX}"
    env = {item["name"]: item.get("value") for item in server["env"]}
    assert env["AWS_SHARED_CREDENTIALS_FILE"] == s3.K8S_CREDENTIALS
    assert env["MLFLOW_S3_ENDPOINT_URL"] == ENDPOINT
    volumes = {v["name"]: v for v in spec["volumes"]}
    secret = volumes["s3-credentials"]["secret"]
    assert secret["secretName"] == "mlflow-s3-credentials"
    assert secret["items"] == [{"key": "credentials", "path": "credentials"}]
    mounts = {m["mountPath"]: m for m in server["volumeMounts"]}
    assert mounts[s3.K8S_CREDENTIALS_DIR]["readOnly"] is True
    # No PersistentVolumeClaim: nothing of the artifacts is on a volume.
    assert "PersistentVolumeClaim" not in found
    assert "artifacts" not in volumes
    assert not (profile.layout.k8s_dir / "artifacts-pvc.yaml").exists()
    egress = [p["port"] for rule in found["NetworkPolicy"]["spec"]["egress"] for p in rule["ports"]]
    assert 9000 in egress


def test_kubernetes_output_passes_the_render_checks(s3_env):
    profile = render_all()
    k8s_checks.test_kustomization_lists_exactly_the_rendered_manifests(profile)
    k8s_checks.test_selectors_match_the_pods_and_the_service_and_pdb_find_them(profile)
    k8s_checks.test_every_referenced_secret_key_exists(profile)
    k8s_checks.test_only_the_secret_is_private(profile)
    k8s_checks.test_pods_are_hardened(profile)
    first = {p: p.read_bytes() for p in profile.layout.k8s_dir.iterdir()}
    k8s.render_profile(load_profile("ci"))
    assert first == {p: p.read_bytes() for p in profile.layout.k8s_dir.iterdir()}


def test_no_credential_value_in_any_rendered_file(s3_env):
    profile = render_all()
    files = [p for p in profile.layout.root.rglob("*") if p.is_file()]
    assert profile.layout.compose_file in files and profile.layout.local_mlflow_env in files
    assert len([p for p in files if p.parent == profile.layout.k8s_dir]) >= 8
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        for value in (ACCESS_KEY, SECRET_KEY, SECRET_KEY.replace("/", "%2F")):
            assert value not in text, path


def test_without_a_credentials_file_boto3s_chain_applies(stack_home, monkeypatch):
    monkeypatch.setenv("MLFLOW_STACK_ARTIFACTS_STORE", "s3")
    monkeypatch.setenv("MLFLOW_STACK_S3_BUCKET", BUCKET)
    profile = render_all()
    assert destination_of(supervisord_command(profile)) == f"s3://{BUCKET}"
    assert "AWS_SHARED_CREDENTIALS_FILE" not in parse_env_file(profile.layout.local_mlflow_env)
    document, mlflow = compose_mlflow(profile)
    assert "secrets" not in mlflow and "secrets" not in document
    assert "AWS_SHARED_CREDENTIALS_FILE" not in mlflow["environment"]
    spec = deployment(profile)
    assert "s3-credentials" not in {v["name"] for v in spec["volumes"]}
    found = k8s_checks.objects(profile)
    egress = [p["port"] for rule in found["NetworkPolicy"]["spec"]["egress"] for p in rule["ports"]]
    assert 443 in egress  # AWS itself


def test_local_artifacts_stay_as_they_were(stack_home):
    profile = render_all()
    assert destination_of(supervisord_command(profile)) == str(profile.layout.artifacts)
    assert not any(k.startswith("AWS_") for k in parse_env_file(profile.layout.local_mlflow_env))
    _, mlflow = compose_mlflow(profile)
    assert destination_of(mlflow["command"]) == render.CONTAINER_ARTIFACTS
    assert "PersistentVolumeClaim" in k8s_checks.objects(profile)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("MLFLOW_STACK_ARTIFACTS_STORE", "gcs", "artifacts_store = 'gcs'; allowed: local, s3"),
        ("MLFLOW_STACK_S3_BUCKET", "", "needs s3_bucket"),
        ("MLFLOW_STACK_S3_BUCKET", "Upper_Case", "breaks S3's naming rules"),
        ("MLFLOW_STACK_S3_BUCKET", "ab", "breaks S3's naming rules"),
        ("MLFLOW_STACK_S3_BUCKET", "-leading-dash", "breaks S3's naming rules"),
        ("MLFLOW_STACK_S3_BUCKET", "two..dots", "no '..'"),
        ("MLFLOW_STACK_S3_BUCKET", "192.168.10.20", "not an IP address"),
        ("MLFLOW_STACK_S3_BUCKET", "xn--bucket", "reserved"),
        ("MLFLOW_STACK_S3_BUCKET", "b" * 64, "breaks S3's naming rules"),
        ("MLFLOW_STACK_S3_PREFIX", "/leading", "s3_prefix"),
        ("MLFLOW_STACK_S3_PREFIX", "trailing/", "s3_prefix"),
        ("MLFLOW_STACK_S3_PREFIX", "a//b", "s3_prefix"),
        ("MLFLOW_STACK_S3_PREFIX", "a/../b", "s3_prefix"),
        ("MLFLOW_STACK_S3_PREFIX", "sp ace", "s3_prefix"),
        ("MLFLOW_STACK_S3_ENDPOINT_URL", "ftp://minio.example.com", "not an http(s) URL"),
        ("MLFLOW_STACK_S3_ENDPOINT_URL", "minio.example.com:9000", "not an http(s) URL"),
        ("MLFLOW_STACK_S3_ENDPOINT_URL", "http://minio:99999", "not an http(s) URL"),
        ("MLFLOW_STACK_S3_ENDPOINT_URL", "https://", "not an http(s) URL"),
        ("MLFLOW_STACK_S3_REGION", "EU West", "s3_region"),
        ("MLFLOW_STACK_ARTIFACTS_DESTINATION", "/srv/artifacts", "artifacts_destination"),
        ("MLFLOW_STACK_K8S_S3_CREDENTIALS_SECRET", "Not_A_Name", "k8s_s3_credentials_secret"),
    ],
)
def test_bad_values_are_refused_in_one_line(s3_env, monkeypatch, variable, value, message):
    monkeypatch.setenv(variable, value)
    with pytest.raises(StackError) as caught:
        load_profile("ci")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_an_endpoint_with_credentials_is_refused_without_echoing_them(s3_env, monkeypatch):
    monkeypatch.setenv("MLFLOW_STACK_S3_ENDPOINT_URL", f"https://{ACCESS_KEY}:pw-in-url@s3.local")
    with pytest.raises(StackError, match="must not carry credentials") as caught:
        load_profile("ci")
    assert ACCESS_KEY not in str(caught.value) and "pw-in-url" not in str(caught.value)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_credentials_file_others_can_read_is_refused(s3_env, credentials, mode):
    credentials.chmod(mode)
    with pytest.raises(StackError, match=f"mode {mode:04o}.*chmod 600") as caught:
        load_profile("ci")
    assert "\n" not in str(caught.value)
    assert stat.S_IMODE(credentials.stat().st_mode) == mode  # refused, not changed


def test_a_missing_credentials_file_is_refused(s3_env, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_STACK_S3_CREDENTIALS_FILE", str(tmp_path / "absent"))
    with pytest.raises(StackError, match="absent does not exist"):
        load_profile("ci")


@pytest.mark.parametrize(
    "content",
    [
        f"aws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n",  # no section
        f"[default]\naws_access_key_id = {ACCESS_KEY}\n",  # no secret key
        f"[other]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n",
        f"[default\n{SECRET_KEY}\n",
    ],
)
def test_a_file_that_is_not_a_credentials_file_is_refused_without_quoting_it(
    s3_env, credentials, content
):
    credentials.write_text(content, encoding="utf-8")
    with pytest.raises(StackError, match="s3_credentials_file") as caught:
        load_profile("ci")
    assert SECRET_KEY not in str(caught.value) and ACCESS_KEY not in str(caught.value)
    assert "\n" not in str(caught.value)


def test_s3_keys_are_not_checked_for_local_artifacts(stack_home, monkeypatch, tmp_path):
    # A profile that merely names a bucket keeps working while its store is local.
    monkeypatch.setenv("MLFLOW_STACK_S3_BUCKET", "Not_Checked")
    monkeypatch.setenv("MLFLOW_STACK_S3_CREDENTIALS_FILE", str(tmp_path / "absent"))
    assert load_profile("ci").artifacts_store == "local"


def test_compose_up_refuses_a_credentials_file_the_server_cannot_read(s3_env, credentials):
    import io
    import os

    from mlflow_stack.health import Progress
    from mlflow_stack.runtime.compose import ComposeRuntime

    profile = render_all()
    runtime = ComposeRuntime(profile)
    calls = []
    runtime.run = lambda *args, **kwargs: calls.append(args)  # type: ignore[method-assign]
    with pytest.raises(StackError, match=rf"chown {render.CONTAINER_UID} .*aws-credentials$"):
        runtime.up(Progress(stream=io.StringIO()))
    assert calls == []  # refused before Compose is called
    if os.geteuid() == 0:  # owned by the server's uid, it goes ahead
        os.chown(credentials, render.CONTAINER_UID, -1)
        runtime.up(Progress(stream=io.StringIO()))
        assert [call[0] for call in calls] == ["build", "up"]
