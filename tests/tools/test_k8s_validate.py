"""The Kubernetes output read by the real validators: kubernetes-validate --strict (its bundled
schemas) and checkov (config/checkov.yml), offline."""

import shutil

import pytest
import yaml

from mlflow_stack import k8s, validate
from mlflow_stack.errors import StackError
from mlflow_stack.profile import load_profile

SSO_EXTERNAL = {
    "MLFLOW_STACK_OIDC_PROVIDER": "external",
    "MLFLOW_STACK_OIDC_ISSUER": "https://idp.example.com/realms/mlflow",
    "MLFLOW_STACK_OIDC_CLIENT_SECRET": "tools-placeholder-client-secret-0123456789",
    "MLFLOW_STACK_OIDC_MACHINE_SECRET": "tools-placeholder-machine-secret-0123456789",
}


def rendered(monkeypatch, name, **environ):
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    profile = load_profile(name)
    k8s.render_profile(profile)
    return profile


@pytest.mark.parametrize("name", ["dev", "ci", "demo", "sso"])
def test_every_profile_passes_both_validators(stack_home, monkeypatch, name):
    # With an autoscaler too, so that hpa.yaml is checked as well.
    environ = {**(SSO_EXTERNAL if name == "sso" else {}), "MLFLOW_STACK_K8S_MAX_REPLICAS": "4"}
    profile = rendered(monkeypatch, name, **environ)
    assert (profile.layout.k8s_dir / "hpa.yaml").exists()
    lines = validate.validate_k8s(profile)
    assert any("kubernetes-validate --strict passed" in line for line in lines)
    assert any("checkov passed" in line for line in lines)


def test_strict_schema_refuses_a_misspelt_field(stack_home, monkeypatch):
    profile = rendered(monkeypatch, "ci")
    service = profile.layout.k8s_dir / "service.yaml"
    document = yaml.safe_load(service.read_text(encoding="utf-8"))
    document["spec"]["selectr"] = document["spec"].pop("selector")
    service.write_text(yaml.safe_dump(document), encoding="utf-8")
    with pytest.raises(StackError, match="kubernetes-validate"):
        validate.run_kubernetes_validate(validate.k8s_manifests(profile))


def test_the_skip_list_is_exactly_what_the_manifests_need(stack_home, monkeypatch, tmp_path):
    # Without config/checkov.yml's skips, checkov fails these checks and only these: a skip
    # that no longer applies, or a new finding hidden by none, fails here.
    profile = rendered(monkeypatch, "ci")
    config = yaml.safe_load(validate.CHECKOV_CONFIG.read_text(encoding="utf-8"))
    skipped = set(config.pop("skip-check"))
    bare = tmp_path / "checkov.yml"
    bare.write_text(yaml.safe_dump(config), encoding="utf-8")
    failed = validate.run_checkov(profile.layout.k8s_dir, bare)
    assert {line.split()[0] for line in failed} == skipped


def test_checkov_catches_a_privileged_pod(stack_home, monkeypatch, tmp_path):
    profile = rendered(monkeypatch, "ci")
    folder = tmp_path / "k8s"
    shutil.copytree(profile.layout.k8s_dir, folder)
    path = folder / "deployment.yaml"
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    container = document["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"]["privileged"] = True
    container["securityContext"]["readOnlyRootFilesystem"] = False
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    failed = {line.split()[0] for line in validate.run_checkov(folder)}
    assert {"CKV_K8S_16", "CKV_K8S_22"} <= failed


def test_s3_artifacts_pass_both_validators(stack_home, monkeypatch):
    # artifacts_store = "s3": no claim, the user's Secret mounted as the credentials file.
    profile = rendered(
        monkeypatch,
        "ci",
        MLFLOW_STACK_ARTIFACTS_STORE="s3",
        MLFLOW_STACK_S3_BUCKET="mlflow-tools-artifacts",
        MLFLOW_STACK_S3_ENDPOINT_URL="https://minio.example.com:9000",
        MLFLOW_STACK_K8S_S3_CREDENTIALS_SECRET="mlflow-s3-credentials",
    )
    assert not (profile.layout.k8s_dir / "artifacts-pvc.yaml").exists()
    assert "mlflow-s3-credentials" in (profile.layout.k8s_dir / "deployment.yaml").read_text()
    lines = validate.validate_k8s(profile)
    assert any("kubernetes-validate --strict passed" in line for line in lines)
    assert any("checkov passed" in line for line in lines)
