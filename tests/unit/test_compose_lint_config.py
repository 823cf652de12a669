"""compose-lint's config per compose file: exclusions of an optional service (keycloak) that a
file does not define are pruned, so --strict-config still refuses every other unknown name."""

import yaml

from mlflow_stack import validate


def write_compose(tmp_path, *services):
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump({"services": {name: {"image": "x:1"} for name in services}}))
    return path


def excluded_services(config_path):
    rules = yaml.safe_load(config_path.read_text())["rules"]
    return {rule: set((body or {}).get("exclude_services") or {}) for rule, body in rules.items()}


def test_a_file_with_keycloak_uses_the_config_as_it_is(tmp_path):
    compose = write_compose(tmp_path, "postgres", "keycloak", "mlflow")
    assert validate.compose_lint_config(compose, tmp_path) == validate.COMPOSE_LINT_CONFIG


def test_a_file_without_keycloak_gets_its_exclusions_pruned_and_nothing_else(tmp_path):
    compose = write_compose(tmp_path, "postgres", "mlflow")
    pruned = validate.compose_lint_config(compose, tmp_path)
    assert pruned != validate.COMPOSE_LINT_CONFIG
    before = excluded_services(validate.COMPOSE_LINT_CONFIG)
    after = excluded_services(pruned)
    assert any("keycloak" in names for names in before.values())
    assert after == {rule: names - {"keycloak"} for rule, names in before.items()}
