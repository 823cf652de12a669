"""perms.* on every resource type MLflow 3.17's permission API knows: selectors, levels, lookups.

The REST client is replaced by an in-memory fake that answers like MLflow (404 with
RESOURCE_DOES_NOT_EXIST for what it does not hold), so every refusal and every grant written is
checked without a server.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import mlflow
import pytest

from mlflow_stack import resources
from mlflow_stack.cli import inputs, perms
from mlflow_stack.client import Grant, MlflowApiError, is_prompt
from mlflow_stack.errors import StackError
from mlflow_stack.profile import load_profile

PROMPT_TAG = {"key": "mlflow.prompt.is_prompt", "value": "true"}


def _mlflow_permissions():
    """MLflow's permissions.py on its own: importing it as mlflow.server.auth.permissions would
    run the auth package's __init__, which reads a server configuration at import time."""
    path = Path(mlflow.__file__).parent / "server" / "auth" / "permissions.py"
    spec = importlib.util.spec_from_file_location("mlflow_auth_permissions", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


mlflow_permissions = _mlflow_permissions()


def missing(what: str) -> MlflowApiError:
    return MlflowApiError(f"{what} not found", 404, "RESOURCE_DOES_NOT_EXIST")


class FakeMlflow:
    """The admin client's resource and permission calls, over dicts; records every write."""

    def __init__(self) -> None:
        self.profile = load_profile("dev")
        self.users = {"alice"}
        self.experiments = {"1": "scoring", "7": "7"}
        self.models = {"churn": [], "greet": [PROMPT_TAG]}
        self.scorers = {("1", "polite/ness")}
        self.secrets = [{"secret_id": "s-1", "secret_name": "openai-key"}]
        self.endpoints = [{"endpoint_id": "e-1", "name": "chat"}]
        self.definitions = [{"model_definition_id": "d-1", "name": "gpt"}]
        self.mcp_servers = {"com.example/srv"}
        self.grants: dict[tuple[str, str, str], str] = {}
        self.writes: list[tuple[str, ...]] = []

    def __enter__(self) -> FakeMlflow:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def get_user(self, username: str) -> object:
        if username not in self.users:
            raise missing("user")
        return object()

    def experiment_by_id(self, experiment_id: str) -> dict[str, Any]:
        if experiment_id not in self.experiments:
            raise missing("experiment")
        return {"experiment_id": experiment_id, "name": self.experiments[experiment_id]}

    def experiment_by_name(self, name: str) -> dict[str, Any]:
        for experiment_id, known in self.experiments.items():
            if known == name:
                return {"experiment_id": experiment_id, "name": name}
        raise missing("experiment")

    def registered_model(self, name: str) -> dict[str, Any]:
        if name not in self.models:
            raise missing("registered model")
        return {"name": name, "tags": self.models[name]}

    def scorer(self, experiment_id: str, name: str) -> dict[str, Any]:
        if (experiment_id, name) not in self.scorers:
            raise missing("scorer")
        return {"experiment_id": experiment_id, "scorer_name": name}

    def _one(self, items: list[dict[str, Any]], key: str, value: str) -> dict[str, Any]:
        for item in items:
            if item[key] == value:
                return item
        raise missing(key)

    def gateway_secret(self, secret_id: str) -> dict[str, Any]:
        return self._one(self.secrets, "secret_id", secret_id)

    def gateway_secrets(self) -> list[dict[str, Any]]:
        return self.secrets

    def gateway_endpoint(self, *, endpoint_id: str = "", name: str = "") -> dict[str, Any]:
        if endpoint_id:
            return self._one(self.endpoints, "endpoint_id", endpoint_id)
        return self._one(self.endpoints, "name", name)

    def gateway_model_definition(self, model_definition_id: str) -> dict[str, Any]:
        return self._one(self.definitions, "model_definition_id", model_definition_id)

    def gateway_model_definitions(self) -> list[dict[str, Any]]:
        return self.definitions

    def mcp_server(self, name: str) -> dict[str, Any]:
        if name not in self.mcp_servers:
            raise missing("mcp server")
        return {"name": name}

    def list_permissions(self, username: str) -> tuple[bool, list[Grant]]:
        return False, [
            Grant(resource_type, resource_id, permission, "__user_2__")
            for (user, resource_type, resource_id), permission in self.grants.items()
            if user == username
        ]

    def grant(self, username: str, resource_type: str, resource_id: str, permission: str) -> None:
        self.writes.append(("grant", resource_type, resource_id, permission))
        self.grants[(username, resource_type, resource_id)] = permission

    def revoke(self, username: str, resource_type: str, resource_id: str) -> None:
        self.writes.append(("revoke", resource_type, resource_id))
        if self.grants.pop((username, resource_type, resource_id), None) is None:
            raise missing("permission")


@pytest.fixture
def fake(stack_home, monkeypatch) -> FakeMlflow:
    fake = FakeMlflow()
    monkeypatch.setattr(perms.AdminClient, "for_profile", classmethod(lambda cls, p: fake))
    return fake


# --- the catalogue follows MLflow's own ----------------------------------------------------------


def test_every_type_mlflow_grants_per_user_has_a_selector_or_a_tier():
    per_id = {
        t
        for t, grains in mlflow_permissions.TYPE.items()
        if mlflow_permissions.PatternKind.ID in grains
    }
    wildcard_only = {
        t
        for t, grains in mlflow_permissions.TYPE.items()
        if mlflow_permissions.PatternKind.ID not in grains
    } - {mlflow_permissions.RESOURCE_TYPE_WORKSPACE}  # the per-user API refuses workspace
    assert set(resources.BY_TYPE) == per_id
    assert set(resources.TIERS) == wildcard_only


def test_no_selector_offers_a_level_mlflow_would_refuse():
    for kind in resources.KINDS:
        assert kind.levels <= mlflow_permissions.RESOURCE_GRANTABLE_PERMISSIONS
    # Every --level the parser accepts is stored as a level MLflow grants on a resource.
    assert set(inputs.LEVELS.values()) == mlflow_permissions.RESOURCE_GRANTABLE_PERMISSIONS


# --- one selector, checked before anything is contacted ---------------------------------------


def test_exactly_one_selector():
    with pytest.raises(StackError, match="exactly one of --experiment"):
        resources.selected({"experiment": None, "prompt": None})
    with pytest.raises(StackError, match=r"\(got --model, --prompt\)"):
        resources.selected({"model": "a", "prompt": "b"})
    with pytest.raises(StackError, match="--gateway-endpoint needs a value"):
        resources.selected({"gateway_endpoint": "  "})
    kind, value = resources.selected({"prompt": " greet ", "model": None})
    assert (kind.resource_type, value) == ("prompt", "greet")


def test_grant_refuses_two_selectors_before_contacting_mlflow(fake):
    with pytest.raises(StackError, match="exactly one of"):
        perms.grant("dev", "alice", "READ", model="churn", scorer="1/polite/ness")
    with pytest.raises(StackError, match="exactly one of"):
        perms.revoke("dev", "alice")
    assert fake.writes == []


@pytest.mark.parametrize("parameter", ["experiment", "model", "prompt", "scorer", "mcp_server"])
def test_use_is_refused_where_nothing_checks_it(parameter):
    with pytest.raises(StackError, match="USE is not enforced"):
        resources.check_level(resources.BY_PARAMETER[parameter], "USE")


@pytest.mark.parametrize(
    "parameter", ["gateway_secret", "gateway_endpoint", "gateway_model_definition"]
)
def test_use_is_a_level_of_the_gateway_types(parameter):
    resources.check_level(resources.BY_PARAMETER[parameter], "USE")


def test_a_refused_level_writes_nothing(fake):
    with pytest.raises(StackError, match="USE is not enforced on a prompt"):
        perms.grant("dev", "alice", "USE", prompt="greet")
    with pytest.raises(StackError, match="USE is not enforced on the run tier"):
        perms.grant("dev", "alice", "USE", tier="run")
    assert fake.writes == []


def test_tiers_take_mlflows_names_or_dashes():
    assert resources.tier_type("Prompt-Version") == "prompt_version"
    with pytest.raises(StackError, match="invalid --tier 'workspace'"):
        resources.tier_type("workspace")


def test_scorer_selector_is_experiment_id_then_name():
    assert resources.scorer_parts("12/a/b") == ("12", "a/b")
    for bad in ("relevance", "scoring/relevance", "12/"):
        with pytest.raises(StackError, match="EXPERIMENT_ID/SCORER_NAME"):
            resources.scorer_parts(bad)


# --- what each selector writes ----------------------------------------------------------------


def test_a_prompt_is_granted_under_mlflows_prompt_type(fake, capsys):
    perms.grant("dev", "alice", "READ", prompt="greet")
    assert fake.writes == [("grant", "prompt", "greet", "READ")]
    assert "granted READ on prompt 'greet' to alice" in capsys.readouterr().out


def test_edit_replaces_read_on_a_prompt(fake, capsys):
    perms.grant("dev", "alice", "READ", prompt="greet")
    perms.grant("dev", "alice", "EDIT", prompt="greet")
    assert fake.grants == {("alice", "prompt", "greet"): "EDIT"}
    assert "(was READ)" in capsys.readouterr().out


def test_model_naming_a_prompt_is_an_error_that_names_prompt(fake):
    with pytest.raises(StackError, match="'greet' is a prompt.*--prompt greet"):
        perms.grant("dev", "alice", "READ", model="greet")
    assert fake.writes == []


def test_prompt_naming_a_model_is_an_error_that_names_model(fake):
    with pytest.raises(StackError, match="registered model, not a prompt: use --model churn"):
        perms.grant("dev", "alice", "READ", prompt="churn")
    with pytest.raises(StackError, match="no prompt named 'nope'"):
        perms.grant("dev", "alice", "READ", prompt="nope")
    assert fake.writes == []


def test_revoke_removes_a_prompt_grant(fake, capsys):
    perms.grant("dev", "alice", "EDIT", prompt="greet")
    perms.revoke("dev", "alice", prompt="greet")
    assert fake.grants == {}
    assert "revoked the grant of alice on prompt 'greet'" in capsys.readouterr().out


def test_a_stale_model_grant_on_a_prompt_can_still_be_revoked(fake, capsys):
    fake.grants[("alice", "registered_model", "greet")] = "READ"
    perms.revoke("dev", "alice", model="greet")
    assert fake.grants == {}
    assert "never checked it" in capsys.readouterr().out


def test_a_scorer_grant_is_on_experiment_id_and_quoted_name(fake):
    perms.grant("dev", "alice", "EDIT", scorer="1/polite/ness")
    assert fake.writes == [("grant", "scorer", "1/polite%2Fness", "EDIT")]
    with pytest.raises(StackError, match="no scorer named 'rude' in experiment 'scoring'"):
        perms.grant("dev", "alice", "EDIT", scorer="1/rude")


@pytest.mark.parametrize(
    ("parameter", "value", "resource_type", "resource_id"),
    [
        ("gateway_secret", "s-1", "gateway_secret", "s-1"),
        ("gateway_secret", "openai-key", "gateway_secret", "s-1"),
        ("gateway_endpoint", "chat", "gateway_endpoint", "e-1"),
        ("gateway_model_definition", "gpt", "gateway_model_definition", "d-1"),
        ("mcp_server", "com.example/srv", "mcp_server", "com.example/srv"),
        ("tier", "prompt_version", "prompt_version", "*"),
    ],
)
def test_gateway_mcp_and_tier_grants_are_on_mlflows_ids(
    fake, parameter, value, resource_type, resource_id
):
    perms.grant("dev", "alice", "DENY", **{parameter: value})
    assert fake.writes == [("grant", resource_type, resource_id, "DENY")]
    perms.revoke("dev", "alice", **{parameter: value})
    assert fake.grants == {}


@pytest.mark.parametrize(
    ("parameter", "value", "message"),
    [
        ("gateway_secret", "nope", "no gateway secret with the id or name 'nope'"),
        ("gateway_endpoint", "nope", "no gateway endpoint with the id or name 'nope'"),
        ("gateway_model_definition", "nope", "no gateway model definition"),
        ("mcp_server", "com.example/none", "no MCP server named 'com.example/none'"),
    ],
)
def test_a_missing_resource_is_named(fake, parameter, value, message):
    with pytest.raises(StackError, match=message):
        perms.grant("dev", "alice", "READ", **{parameter: value})
    assert fake.writes == []


# --- the listing --------------------------------------------------------------------------------


def test_list_shows_every_type_and_flags_unenforced_grants(fake, capsys):
    fake.grants.update(
        {
            ("alice", "prompt", "greet"): "READ",
            ("alice", "registered_model", "greet"): "READ",
            ("alice", "scorer", "1/polite%2Fness"): "EDIT",
            ("alice", "gateway_endpoint", "e-1"): "USE",
            ("alice", "gateway_secret", "s-1"): "USE",
            ("alice", "gateway_model_definition", "d-1"): "READ",
            ("alice", "mcp_server", "com.example/srv"): "EDIT",
            ("alice", "run", "*"): "DENY",
        }
    )
    perms.list_grants("dev", "alice")
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines()[1:] if line.strip()}
    assert "NOT enforced: revoke with --model, grant with --prompt" in rows["registered_model"]
    assert "NOT enforced" not in rows["prompt"]
    assert "polite/ness (experiment scoring)" in rows["scorer"]
    assert "chat" in rows["gateway_endpoint"] and "openai-key" in rows["gateway_secret"]
    assert "gpt" in rows["gateway_model_definition"]
    assert "com.example/srv" in rows["mcp_server"] and "(every one)" in rows["run"]


def test_is_prompt_reads_mlflows_tag():
    assert is_prompt({"tags": [PROMPT_TAG]})
    assert not is_prompt({"tags": [{"key": "mlflow.prompt.is_prompt", "value": "false"}]})
    assert not is_prompt({})
