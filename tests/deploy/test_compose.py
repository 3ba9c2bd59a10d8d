"""docker-compose.yml: valid Compose, and a stack whose parts are wired to each other.

Validated twice: against the Compose Specification JSON schema (the copy docker-compose 1.29.2 ships,
fetched from PyPI once and pinned by hash), and by ``compose-spec``, a strict parser of the current
specification (it rejects unknown keys). Both see the file as Compose does: YAML merge keys resolved,
variables interpolated.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from compose_spec import PyCompose

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
SCHEMA_WHEEL = "docker_compose-1.29.2-py2.py3-none-any.whl"
SCHEMA_WHEEL_SHA256 = "8d5589373b35c8d3b1c8c1182c6e4a4ff14bffa3dd0b605fcd08f73c94cef809"
SCHEMA_CACHE = Path(sys.prefix) / "cache" / "compose-spec"
PORTS = {"proxy": 8080, "api": 8081, "recorder": 8082}
TOPIC = "aibridge.interceptions.v1"
_VARIABLE = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?-)(?P<default>[^}]*))?\})")


def interpolate(value: Any, environ: Mapping[str, str]) -> Any:
    """Compose's variable substitution: $$ is a literal $, ${NAME}, ${NAME:-default}, ${NAME-default}."""
    if isinstance(value, dict):
        return {key: interpolate(item, environ) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, environ) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        current = environ.get(match["name"])
        if (match["op"] == ":-" and not current) or (match["op"] == "-" and current is None):
            return match["default"]
        assert current is not None, f"${{{match['name']}}} has no default"
        return current

    return _VARIABLE.sub(substitute, value)


def load(text: str) -> dict[str, Any]:
    model: dict[str, Any] = interpolate(yaml.safe_load(text), {})
    return model


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def compose_schema() -> dict[str, Any]:
    wheel = SCHEMA_CACHE / SCHEMA_WHEEL
    if not wheel.exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--only-binary=:all:",
                "--dest",
                str(SCHEMA_CACHE),
                "docker-compose==1.29.2",
            ],
            check=True,
            timeout=120,
        )
    assert hashlib.sha256(wheel.read_bytes()).hexdigest() == SCHEMA_WHEEL_SHA256
    with zipfile.ZipFile(wheel) as archive:
        schema: dict[str, Any] = json.loads(archive.read("compose/config/compose_spec.json"))
    return schema


def schema_errors(model: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft201909Validator(schema)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(model)]


def with_typo(model: dict[str, Any]) -> dict[str, Any]:
    broken: dict[str, Any] = json.loads(json.dumps(model))
    broken["services"]["proxy"]["dependson"] = broken["services"]["proxy"].pop("depends_on")
    return broken


def test_valid_against_the_compose_spec_json_schema(compose: dict[str, Any], compose_schema: dict[str, Any]) -> None:
    assert compose_schema["id"] == "compose_spec.json"
    assert schema_errors(compose, compose_schema) == []
    assert any("dependson" in error for error in schema_errors(with_typo(compose), compose_schema))


def test_valid_for_a_strict_parser_of_the_current_spec(compose: dict[str, Any]) -> None:
    parsed = PyCompose.from_json(json.dumps(compose))
    assert set(parsed.service_names()) == set(compose["services"])
    with pytest.raises(ValueError, match="dependson"):
        PyCompose.from_json(json.dumps(with_typo(compose)))


def test_the_stack_has_every_part(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {
        "kafka",
        "kafka-topics",
        "clickhouse",
        "keys",
        "proxy",
        "recorder",
        "api",
        "otel-collector",
        "jaeger",
        "prometheus",
        "grafana",
    }


def test_kafka_runs_kraft_single_node_and_topics_are_created(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]["environment"]
    assert set(kafka["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert kafka["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka:9093"
    assert not any("ZOOKEEPER" in name for name in kafka)
    topics = compose["services"]["kafka-topics"]
    script = topics["command"][0]
    assert f"for topic in {TOPIC} {TOPIC}.dlq aibridge.audit.v1; do" in script
    assert "--create --if-not-exists" in script and '--topic "$topic"' in script
    assert topics["depends_on"] == {"kafka": {"condition": "service_healthy"}}


def test_each_component_runs_from_the_dockerfile_and_waits_for_what_it_needs(compose: dict[str, Any]) -> None:
    services = compose["services"]
    needs = {
        "proxy": {"keys", "kafka-topics", "clickhouse", "otel-collector"},  # the store: budgets
        "recorder": {"keys", "kafka-topics", "clickhouse", "otel-collector"},
        "api": {"keys", "clickhouse", "recorder", "kafka-topics"},
    }
    for component, port in PORTS.items():
        service = services[component]
        assert service["build"] == "." and service["image"] == services["keys"]["image"]
        assert service["command"] == [component, "--listen", f"0.0.0.0:{port}"]
        assert f"http://127.0.0.1:{port}/readyz" in " ".join(service["healthcheck"]["test"])
        assert set(service["depends_on"]) == needs[component]
        assert service["depends_on"]["keys"] == {"condition": "service_completed_successfully"}
    assert services["api"]["depends_on"]["recorder"] == {"condition": "service_healthy"}


def test_depends_on_conditions_can_be_met(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for target, rule in service.get("depends_on", {}).items():
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target} to be healthy"
            if rule["condition"] == "service_completed_successfully":
                assert services[target]["restart"] == "no", f"{name} waits for one-shot {target}"


def test_keys_are_made_once_and_only_the_public_key_is_shared(compose: dict[str, Any]) -> None:
    services = compose["services"]
    script = services["keys"]["command"][0]
    assert "aibridge token keygen --out signing" in script
    assert "aibridge token issue --user admin --role admin" in script
    assert "[ -f signing/signing_key.pem ] ||" in script
    for component in PORTS:
        volumes = services[component]["volumes"]
        assert "aibridge-keys:/var/lib/aibridge/keys:ro" in volumes
        assert not any(volume.startswith("aibridge-signing:") for volume in volumes)
        env = services[component]["environment"]
        assert env["AIBRIDGE_AUTH_PUBLIC_KEY_FILE"] == "/var/lib/aibridge/keys/signing_key.pub.pem"


def test_provider_keys_come_from_the_shell_not_the_file(compose: dict[str, Any]) -> None:
    env = compose["services"]["proxy"]["environment"]
    assert env["AIBRIDGE_OPENAI_KEY"] is None and env["AIBRIDGE_ANTHROPIC_KEY"] is None


def test_services_talk_to_the_stack(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for component in ("proxy", "recorder", "api"):  # the API publishes access audit records
        assert services[component]["environment"]["AIBRIDGE_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert services["api"]["environment"]["AIBRIDGE_AUDIT_TOPIC"] == "aibridge.audit.v1"
    clickhouse = services["clickhouse"]["environment"]
    url = f"http://{clickhouse['CLICKHOUSE_USER']}:{clickhouse['CLICKHOUSE_PASSWORD']}@clickhouse:8123"
    for component in ("proxy", "recorder", "api"):  # the proxy reads budgets and spend when budgets are on
        assert services[component]["environment"]["AIBRIDGE_CLICKHOUSE_URL"] == url
        assert services[component]["environment"]["AIBRIDGE_CLICKHOUSE_DATABASE"] == clickhouse["CLICKHOUSE_DB"]
    for component in PORTS:
        assert services[component]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4317"


def test_prometheus_scrapes_every_service(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((ROOT / "deploy/compose/prometheus.yml").read_text())
    targets = {t for job in config["scrape_configs"] for group in job["static_configs"] for t in group["targets"]}
    assert {f"{component}:{port}" for component, port in PORTS.items()} <= targets


def test_collector_sends_traces_to_jaeger(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((ROOT / "deploy/compose/otel-collector.yaml").read_text())
    assert config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"] == "0.0.0.0:4317"
    pipeline = config["service"]["pipelines"]["traces"]
    assert pipeline["receivers"] == ["otlp"]
    assert [config["exporters"][name]["endpoint"] for name in pipeline["exporters"]] == ["jaeger:4317"]
    assert compose["services"]["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"


def test_grafana_gets_both_data_sources_and_the_dashboard(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    assert "grafana-clickhouse-datasource" in grafana["environment"]["GF_INSTALL_PLUGINS"]
    provisioning = ROOT / "deploy/compose/grafana/provisioning"
    sources = yaml.safe_load((provisioning / "datasources/datasources.yaml").read_text())["datasources"]
    by_type = {source["type"]: source for source in sources}
    assert by_type["prometheus"]["url"] == "http://prometheus:9090"
    clickhouse = by_type["grafana-clickhouse-datasource"]["jsonData"]
    assert (clickhouse["host"], clickhouse["defaultDatabase"]) == ("clickhouse", "aibridge")
    provider = yaml.safe_load((provisioning / "dashboards/dashboards.yaml").read_text())["providers"][0]
    mounts = dict(volume.rsplit(":", 2)[:2] for volume in grafana["volumes"] if volume.startswith("./"))
    assert mounts["./deploy/grafana"].startswith(provider["options"]["path"] + "/")
    assert mounts["./deploy/compose/grafana/provisioning"] == "/etc/grafana/provisioning"


def test_every_bind_mount_exists(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            if volume.startswith("./"):
                assert (ROOT / volume.split(":")[0]).exists(), f"{name}: {volume}"


def test_interpolation_follows_compose() -> None:
    assert interpolate("$$topic ${A:-x} ${B-y} ${C}", {"A": "", "B": "", "C": "c"}) == "$topic x  c"


def test_every_variable_set_is_one_a_service_reads(compose: dict[str, Any]) -> None:
    from settings_names import unknown

    names = {name for component in PORTS for name in compose["services"][component]["environment"]}
    assert unknown(names) == set()
    assert unknown({"AIBRIDGE_CLICKHOUSE_ULR"}) == {"AIBRIDGE_CLICKHOUSE_ULR"}
