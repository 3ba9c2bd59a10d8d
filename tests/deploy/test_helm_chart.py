"""The Helm chart: Helm's lint, its values schema, and the objects it renders for several value sets.

Rendering runs Helm's Go code in a subprocess (tests/deploy/helm_check.py, also scripts/helm-check).
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "aibridge"
COMPONENTS = ("proxy", "recorder", "api")
PORTS = {"proxy": 8080, "api": 8081, "recorder": 8082}
DASHBOARD_FILE = ROOT / "deploy" / "grafana" / "aibridge-dashboard.json"

Manifest = dict[str, Any]


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("helm_check.py"))],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.stdout, completed.stderr[-4000:]
    result: dict[str, Any] = json.loads(completed.stdout)
    return result


def objects(report: dict[str, Any], case: str) -> list[Manifest]:
    rendered = report["cases"][case]
    assert rendered["ok"], rendered["error"]
    found: list[Manifest] = []
    for path, text in rendered["manifests"].items():
        if path.endswith(".yaml"):
            found += [doc for doc in yaml.safe_load_all(text) if doc]
    return found


def one(found: list[Manifest], kind: str, name: str) -> Manifest:
    matches = [o for o in found if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def container(found: list[Manifest], component: str) -> Manifest:
    deployment = one(found, "Deployment", f"bridge-aibridge-{component}")
    containers: list[Manifest] = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(found: list[Manifest], component: str) -> dict[str, Manifest]:
    return {entry["name"]: entry for entry in container(found, component)["env"]}


def secret_ref(entry: Manifest) -> tuple[str, str]:
    ref = entry["valueFrom"]["secretKeyRef"]
    return ref["name"], ref["key"]


def key_tree(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: key_tree(item) for key, item in value.items()}
    return type(value).__name__


# --- Helm lint and the values schema ---------------------------------------------------------------


def test_helm_lint_reports_no_error(report: dict[str, Any]) -> None:
    errors = [m for m in report["lint"]["messages"] if m["severity"] >= 3]
    assert errors == [] and report["lint"]["errors"] == []
    assert report["lint"]["total_charts_linted"] == 1


def test_values_yaml_is_valid_against_the_schema() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.validate(yaml.safe_load((CHART / "values.yaml").read_text()), schema)


@pytest.mark.parametrize(
    ("override", "complaint"),
    [
        ({"proxy": {"replicaCout": 3}}, "replicaCout"),
        ({"kafka": {"bootstrapServers": "kafka:9092"}}, "bootstrapServers"),
        ({"clickhouseUrl": "http://clickhouse:8123"}, "clickhouseUrl"),
        ({"recorder": {"pdb": {"enable": True}}}, "enable"),
        ({"logging": {"level": "VERBOSE"}}, "VERBOSE"),
        ({"kafka": {"securityProtocol": "TLS"}}, "TLS"),
        ({"retention": "60 days"}, "60 days"),
        ({"mcp": {"servers": [{"name": "Docs", "url": "https://d/mcp"}]}}, "Docs"),
        ({"mcp": {"servers": [{"name": "gh", "url": "https://g/mcp", "auth": {"kind": "bearer"}}]}}, "tokenSecret"),
        ({"mcp": {"servers": [{"name": "d", "url": "ftp://d/mcp"}]}}, "ftp"),
    ],
)
def test_schema_rejects_typos_and_bad_values(override: dict[str, Any], complaint: str) -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for section, value in override.items():
        values[section] = {**values[section], **value} if isinstance(value, dict) else value
    with pytest.raises(jsonschema.ValidationError, match=complaint):
        jsonschema.validate(values, schema)


def test_helm_itself_rejects_a_typo_at_install(report: dict[str, Any]) -> None:
    for case, key in [("typo_in_component", "replicaCout"), ("typo_at_top", "clickhouseUrl")]:
        outcome = report["cases"][case]
        assert not outcome["ok"]
        assert f"additional properties '{key}' not allowed" in outcome["error"]


def test_component_value_blocks_are_identical_in_shape() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    shapes = {component: key_tree(values[component]) for component in COMPONENTS}
    assert shapes["proxy"] == shapes["recorder"] == shapes["api"]
    schema = json.loads((CHART / "values.schema.json").read_text())["properties"]
    assert schema["proxy"]["properties"] == schema["recorder"]["properties"] == schema["api"]["properties"]


# --- validations that fail with a clear message -----------------------------------------------------


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no_clickhouse_url", "aibridge: clickhouse.url is required"),
        ("chdb_url", "is the embedded engine (chDB), which allows one process per data directory"),
        ("credentials_in_url", "clickhouse.url must not contain credentials"),
        ("no_kafka_bootstrap", "aibridge: kafka.bootstrap is required"),
        ("no_public_key", "aibridge: the token public key is required"),
        ("oidc_without_audience", "oidc.audience is required with oidc.issuer"),
        ("private_key_as_public", "never the private key"),
        ("hpa_min_above_max", "proxy.autoscaling.minReplicas (5) is greater than maxReplicas (2)"),
        ("kafka_tls_without_ssl", "kafka.tls.existingSecret needs kafka.securityProtocol SSL or SASL_SSL"),
        ("clickhouse_tls_over_http", "clickhouse.tls.existingSecret needs an https:// clickhouse.url"),
    ],
)
def test_invalid_values_fail_with_a_clear_message(report: dict[str, Any], case: str, message: str) -> None:
    outcome = report["cases"][case]
    assert not outcome["ok"]
    assert message in outcome["error"]


# --- what the required values render ----------------------------------------------------------------


def test_required_values_render_the_three_components(report: dict[str, Any]) -> None:
    found = objects(report, "required")
    kinds = sorted(o["kind"] for o in found)
    assert kinds.count("Deployment") == 3 and kinds.count("Service") == 3
    assert kinds.count("PodDisruptionBudget") == 3
    assert not {"Ingress", "HorizontalPodAutoscaler", "ServiceMonitor"} & set(kinds)
    for component in COMPONENTS:
        main = container(found, component)
        assert main["args"] == [component, "--listen", f"0.0.0.0:{PORTS[component]}"]
        assert main["ports"] == [{"name": "http", "containerPort": PORTS[component], "protocol": "TCP"}]
        assert main["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert main["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert main["securityContext"]["readOnlyRootFilesystem"] is True
        assert main["securityContext"]["allowPrivilegeEscalation"] is False
        assert main["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        service = one(found, "Service", f"bridge-aibridge-{component}")
        assert service["spec"]["selector"]["app.kubernetes.io/component"] == component
        assert service["spec"]["ports"][0]["port"] == PORTS[component]
        pod = one(found, "Deployment", f"bridge-aibridge-{component}")["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True


def test_each_component_gets_only_the_settings_it_reads(report: dict[str, Any]) -> None:
    found = objects(report, "required")
    env = {component: env_of(found, component) for component in COMPONENTS}
    for component in COMPONENTS:
        assert env[component]["AIBRIDGE_AUTH_PUBLIC_KEY_FILE"]["value"] == "/etc/aibridge/auth/public-key.pem"
    assert env["proxy"]["AIBRIDGE_KAFKA_BOOTSTRAP"]["value"] == "kafka-0.kafka:9092,kafka-1.kafka:9092"
    assert env["recorder"]["AIBRIDGE_KAFKA_TOPIC"]["value"] == "aibridge.interceptions.v1"
    assert env["api"]["AIBRIDGE_KAFKA_BOOTSTRAP"]["value"] == "kafka-0.kafka:9092,kafka-1.kafka:9092"
    assert env["api"]["AIBRIDGE_AUDIT_TOPIC"]["value"] == "aibridge.audit.v1"
    assert env["api"]["AIBRIDGE_API_TRUSTED_PROXIES"]["value"] == ""
    assert "AIBRIDGE_AUDIT_TOPIC" not in env["proxy"]
    assert env["recorder"]["AIBRIDGE_CLICKHOUSE_URL"]["value"] == "https://clickhouse.db.svc:8443"
    assert env["api"]["AIBRIDGE_RETENTION"]["value"] == "60d"
    assert "AIBRIDGE_CLICKHOUSE_URL" not in env["proxy"]
    assert env["proxy"]["AIBRIDGE_SPOOL_DIR"]["value"] == "/var/lib/aibridge/spool"
    assert env["proxy"]["AIBRIDGE_STRUCTURED_LOGS"]["value"] == "true"


def test_oidc_settings_reach_the_proxy_and_the_api(report: dict[str, Any]) -> None:
    found = objects(report, "full")
    for component in ("proxy", "api"):
        env = {name: entry.get("value") for name, entry in env_of(found, component).items()}
        assert env["AIBRIDGE_OIDC_ISSUER"] == "https://login.example.com/realms/main"
        assert env["AIBRIDGE_OIDC_AUDIENCE"] == "aibridge-cli"
        assert env["AIBRIDGE_OIDC_ADMIN_GROUPS"] == "platform-admins,sre"
        assert env["AIBRIDGE_OIDC_USERNAME_CLAIMS"] == "preferred_username,email"
    assert not any(name.startswith("AIBRIDGE_OIDC_") for name in env_of(found, "recorder")), "it authenticates no one"
    assert not any(name.startswith("AIBRIDGE_OIDC_") for name in env_of(objects(report, "required"), "proxy"))


def test_public_key_comes_from_the_chart_secret(report: dict[str, Any]) -> None:
    found = objects(report, "required")
    secret = one(found, "Secret", "bridge-aibridge")
    assert "BEGIN PUBLIC KEY" in base64.b64decode(secret["data"]["auth-public-key"]).decode()
    assert set(secret["data"]) == {"auth-public-key"}
    pod = one(found, "Deployment", "bridge-aibridge-proxy")["spec"]["template"]["spec"]
    auth = next(v for v in pod["volumes"] if v["name"] == "auth")
    assert auth["secret"] == {
        "secretName": "bridge-aibridge",
        "items": [{"key": "auth-public-key", "path": "public-key.pem"}],
    }


def test_helm_test_hook_checks_readyz_of_every_service(report: dict[str, Any]) -> None:
    found = objects(report, "required")
    pod = one(found, "Pod", "bridge-aibridge-test-readyz")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    command = pod["spec"]["containers"][0]["command"]
    assert command[:2] == ["python", "-c"]
    assert command[3:] == [f"http://bridge-aibridge-{c}:{PORTS[c]}/readyz" for c in COMPONENTS]


def test_notes_tell_clients_where_to_point(report: dict[str, Any]) -> None:
    notes = report["cases"]["full"]["manifests"]["aibridge/templates/NOTES.txt"]
    assert "ANTHROPIC_BASE_URL=https://bridge.example.com/api/v2/aibridge/anthropic" in notes
    assert 'base_url="https://bridge.example.com/api/v2/aibridge/openai/v1"' in notes


# --- existing secrets ---------------------------------------------------------------------------------


def test_existing_secrets_are_referenced_and_no_chart_secret_is_made(report: dict[str, Any]) -> None:
    found = objects(report, "existing_secrets")
    assert [o for o in found if o["kind"] == "Secret"] == []
    proxy, recorder = env_of(found, "proxy"), env_of(found, "recorder")
    assert secret_ref(proxy["AIBRIDGE_OPENAI_KEY"]) == ("llm-keys", "openai")
    assert secret_ref(proxy["AIBRIDGE_ANTHROPIC_KEY"]) == ("llm-keys", "anthropic")
    assert secret_ref(proxy["AIBRIDGE_KAFKA_SASL_PASSWORD"]) == ("kafka-user", "kafka-sasl-password")
    assert proxy["AIBRIDGE_KAFKA_SASL_MECHANISM"]["value"] == "SCRAM-SHA-512"
    assert secret_ref(recorder["AIBRIDGE_CLICKHOUSE_USERNAME"]) == ("ch-credentials", "username")
    assert secret_ref(recorder["AIBRIDGE_CLICKHOUSE_PASSWORD"]) == ("ch-credentials", "password")
    pod = one(found, "Deployment", "bridge-aibridge-api")["spec"]["template"]["spec"]
    auth = next(v for v in pod["volumes"] if v["name"] == "auth")
    assert auth["secret"]["secretName"] == "bridge-auth"
    assert auth["secret"]["items"] == [{"key": "pub.pem", "path": "public-key.pem"}]


# --- everything on ----------------------------------------------------------------------------------


def test_ingress_routes_provider_paths_to_the_proxy_and_the_rest_to_the_api(report: dict[str, Any]) -> None:
    ingress = one(objects(report, "full"), "Ingress", "bridge-aibridge")
    rule = ingress["spec"]["rules"][0]
    assert rule["host"] == "bridge.example.com"
    routes = {
        p["path"]: (p["backend"]["service"]["name"], p["backend"]["service"]["port"]["number"])
        for p in rule["http"]["paths"]
    }
    assert routes == {
        "/api/v2/aibridge/openai": ("bridge-aibridge-proxy", 8080),
        "/api/v2/aibridge/anthropic": ("bridge-aibridge-proxy", 8080),
        "/api/v2/aibridge": ("bridge-aibridge-api", 8081),
    }
    assert all(p["pathType"] == "Prefix" for p in rule["http"]["paths"])
    assert ingress["spec"]["tls"][0]["secretName"] == "bridge-tls"


def test_proxy_autoscales_and_leaves_replicas_to_the_hpa(report: dict[str, Any]) -> None:
    found = objects(report, "full")
    hpa = one(found, "HorizontalPodAutoscaler", "bridge-aibridge-proxy")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "bridge-aibridge-proxy",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12)
    assert "replicas" not in one(found, "Deployment", "bridge-aibridge-proxy")["spec"]
    assert one(found, "Deployment", "bridge-aibridge-api")["spec"]["replicas"] == 2


def test_service_monitors_scrape_every_component(report: dict[str, Any]) -> None:
    found = objects(report, "full")
    for component in COMPONENTS:
        monitor = one(found, "ServiceMonitor", f"bridge-aibridge-{component}")
        assert monitor["metadata"]["labels"]["release"] == "prometheus"
        assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
        assert monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == component


def test_clickhouse_credentials_stay_in_the_secret(report: dict[str, Any]) -> None:
    found = objects(report, "full")
    env = env_of(found, "recorder")
    assert env["AIBRIDGE_CLICKHOUSE_URL"]["value"] == "https://clickhouse.db.svc:8443"
    assert secret_ref(env["AIBRIDGE_CLICKHOUSE_USERNAME"]) == ("bridge-aibridge", "clickhouse-username")
    assert secret_ref(env["AIBRIDGE_CLICKHOUSE_PASSWORD"]) == ("bridge-aibridge", "clickhouse-password")
    data = one(found, "Secret", "bridge-aibridge")["data"]
    assert base64.b64decode(data["clickhouse-password"]).decode() == "p@ss word/1"  # as typed: not in a URL


def test_secrets_never_show_outside_the_secret(report: dict[str, Any]) -> None:
    manifests = report["cases"]["full"]["manifests"]
    for path, text in manifests.items():
        if not path.endswith("secret.yaml"):
            for secret in ("sk-test-openai", "sk-ant-test", "kafka-secret", "p@ss word/1", "p%40ss"):
                assert secret not in text, f"{secret!r} in {path}"
    found = objects(report, "full")
    data = one(found, "Secret", "bridge-aibridge")["data"]
    assert base64.b64decode(data["openai-api-key"]) == b"sk-test-openai"
    assert secret_ref(env_of(found, "proxy")["AIBRIDGE_OPENAI_KEY"]) == ("bridge-aibridge", "openai-api-key")


# Secret values given inline in the cases, and names that say "secret".
INLINE_SECRETS = ("sk-test-openai", "sk-ant-test", "kafka-secret", "p@ss word/1", "ch-secret", "PRIVATE KEY")
SECRET_LIKE = re.compile(r"password|secret|api.?key|private|credential|passphrase", re.IGNORECASE)
SECRET_ENV = re.compile(r"_(KEY|PASSWORD|TOKEN|SECRET)$")
TLS_FILE_PREFIXES = ("AIBRIDGE_KAFKA_SSL_", "AIBRIDGE_CLICKHOUSE_CA_", "AIBRIDGE_CLICKHOUSE_CLIENT_")


@pytest.mark.parametrize("case", ["required", "full", "existing_secrets", "tls"])
def test_no_config_map_holds_a_secret_and_secrets_come_from_secret_objects(report: dict[str, Any], case: str) -> None:
    found = objects(report, case)
    for config_map in (o for o in found if o["kind"] == "ConfigMap"):
        for key, value in (config_map.get("data") or {}).items():
            assert not SECRET_LIKE.search(key), f"{config_map['metadata']['name']} has a secret-like key {key}"
            assert not any(secret in value for secret in INLINE_SECRETS), f"a secret in {key}"
    for component in COMPONENTS:
        main = container(found, component)
        assert "envFrom" not in main
        for entry in main["env"]:
            assert "configMapKeyRef" not in entry.get("valueFrom", {})
            assert not any(secret in str(entry.get("value", "")) for secret in INLINE_SECRETS), entry["name"]
            if SECRET_ENV.search(entry["name"]):  # a secret itself: only ever a reference to a Secret
                assert "secretKeyRef" in entry["valueFrom"], entry["name"]
        pod = one(found, "Deployment", f"bridge-aibridge-{component}")["spec"]["template"]["spec"]
        mounted = {m["name"]: m["mountPath"] for m in main["volumeMounts"]}
        for volume in pod["volumes"]:
            if volume["name"] in ("auth", "kafka-tls", "clickhouse-tls"):
                assert "secret" in volume and "configMap" not in volume, volume["name"]
        for entry in main["env"]:  # a secret's _FILE form and TLS material point into a Secret's mount
            name = entry["name"]
            secret_file = SECRET_ENV.search(name.removesuffix("_FILE")) or name.startswith(TLS_FILE_PREFIXES)
            if name.endswith("FILE") and secret_file:
                directory = entry["value"].rsplit("/", 1)[0]
                volume = next(name for name, path in mounted.items() if path == directory)
                assert "secret" in next(v for v in pod["volumes"] if v["name"] == volume), entry["name"]


def test_tls_material_is_mounted_from_the_named_secrets(report: dict[str, Any]) -> None:
    found = objects(report, "tls")
    env = {component: env_of(found, component) for component in COMPONENTS}
    for component in COMPONENTS:  # the API publishes audit records to Kafka too
        kafka = env[component]
        assert kafka["AIBRIDGE_KAFKA_SECURITY_PROTOCOL"]["value"] == "SASL_SSL"
        assert kafka["AIBRIDGE_KAFKA_SSL_CAFILE"]["value"] == "/etc/aibridge/kafka-tls/ca.crt"
        assert kafka["AIBRIDGE_KAFKA_SSL_CERTFILE"]["value"] == "/etc/aibridge/kafka-tls/tls.crt"
        assert kafka["AIBRIDGE_KAFKA_SSL_KEYFILE"]["value"] == "/etc/aibridge/kafka-tls/tls.key"
        assert kafka["AIBRIDGE_KAFKA_SSL_KEY_PASSWORD_FILE"]["value"] == "/etc/aibridge/kafka-tls/key-password"
        assert secret_ref(kafka["AIBRIDGE_KAFKA_SASL_PASSWORD"]) == ("bridge-aibridge", "kafka-sasl-password")
    for component in ("recorder", "api"):
        store = env[component]
        assert store["AIBRIDGE_CLICKHOUSE_CA_FILE"]["value"] == "/etc/aibridge/clickhouse-tls/ca.crt"
        assert store["AIBRIDGE_CLICKHOUSE_CLIENT_KEY_FILE"]["value"] == "/etc/aibridge/clickhouse-tls/tls.key"
    volumes = {
        component: {
            v["name"]: v.get("secret", {}).get("secretName")
            for v in one(found, "Deployment", f"bridge-aibridge-{component}")["spec"]["template"]["spec"]["volumes"]
        }
        for component in COMPONENTS
    }
    assert {volumes[component]["kafka-tls"] for component in COMPONENTS} == {"kafka-tls"}
    assert volumes["recorder"]["clickhouse-tls"] == volumes["api"]["clickhouse-tls"] == "ch-tls"
    assert "clickhouse-tls" not in volumes["proxy"] and "AIBRIDGE_CLICKHOUSE_CA_FILE" not in env["proxy"]
    data = one(found, "Secret", "bridge-aibridge")["data"]
    assert base64.b64decode(data["kafka-sasl-password"]) == b"kafka-secret"


def test_proxy_with_budgets_gets_the_store_tls_and_credentials(report: dict[str, Any]) -> None:
    found = objects(report, "tls_budgets")
    proxy, recorder = env_of(found, "proxy"), env_of(found, "recorder")
    for name in (
        "AIBRIDGE_CLICKHOUSE_CA_FILE",
        "AIBRIDGE_CLICKHOUSE_CLIENT_CERT_FILE",
        "AIBRIDGE_CLICKHOUSE_CLIENT_KEY_FILE",
    ):
        assert proxy[name] == recorder[name], name
    for name in ("AIBRIDGE_CLICKHOUSE_USERNAME", "AIBRIDGE_CLICKHOUSE_PASSWORD"):
        assert secret_ref(proxy[name]) == secret_ref(recorder[name]), name
    pod = one(found, "Deployment", "bridge-aibridge-proxy")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "clickhouse-tls")
    assert volume["secret"]["secretName"] == "ch-tls"
    mounts = {m["name"]: m for m in container(found, "proxy")["volumeMounts"]}
    assert mounts["clickhouse-tls"] == {
        "name": "clickhouse-tls",
        "mountPath": "/etc/aibridge/clickhouse-tls",
        "readOnly": True,
    }


def test_full_values_set_limits_tracing_and_revocations(report: dict[str, Any]) -> None:
    found = objects(report, "full")
    proxy = env_of(found, "proxy")
    assert proxy["AIBRIDGE_MAX_RPS"]["value"] == "50" and proxy["AIBRIDGE_USER_MAX_RPM"]["value"] == "120"
    assert proxy["AIBRIDGE_OPENAI_BASE_URL"]["value"] == "https://openai.internal/v1"
    assert proxy["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == "http://otel-collector:4317"
    assert proxy["AIBRIDGE_TRACE_ENABLE"]["value"] == "true" and proxy["EXTRA_FLAG"]["value"] == "1"
    assert proxy["AIBRIDGE_BUDGETS"]["value"] == "true" and proxy["AIBRIDGE_BUDGET_REFRESH_INTERVAL"]["value"] == "5"
    assert proxy["AIBRIDGE_BUDGET_ALERTS_TOPIC"]["value"] == "aibridge.alerts.v1"
    assert proxy["AIBRIDGE_CLICKHOUSE_URL"]["value"] == "https://clickhouse.db.svc:8443"  # budgets read the store
    assert env_of(found, "api")["AIBRIDGE_RETENTION"]["value"] == "30d"
    revoked = one(found, "ConfigMap", "bridge-aibridge-revoked-tokens")
    assert revoked["data"]["revoked-token-ids"].split() == ["jti-1", "jti-2"]


# --- the Grafana dashboard ----------------------------------------------------------------------------


def test_dashboard_config_map_for_the_grafana_sidecar(report: dict[str, Any]) -> None:
    found = objects(report, "with_dashboard")
    config_map = one(found, "ConfigMap", "bridge-aibridge-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["data"]["aibridge-dashboard.json"] == report["dashboard"]


def test_dashboard_ships_exactly_when_the_file_exists(report: dict[str, Any]) -> None:
    shipped = [o for o in objects(report, "required") if o["metadata"]["name"] == "bridge-aibridge-dashboard"]
    if DASHBOARD_FILE.exists():
        assert shipped and shipped[0]["data"]["aibridge-dashboard.json"] == DASHBOARD_FILE.read_text()
    else:
        assert shipped == []


def test_every_variable_set_is_one_a_service_reads(report: dict[str, Any]) -> None:
    from settings_names import unknown

    for case in ("full", "existing_secrets"):
        found = objects(report, case)
        names = {entry["name"] for component in COMPONENTS for entry in container(found, component)["env"]}
        assert unknown(names) == set()
        assert "AIBRIDGE_CLICKHOUSE_URL" in names and "AIBRIDGE_USER_MAX_RPM" in names


def test_values_named_in_the_docs_exist() -> None:
    import re

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    text = (ROOT / "docs" / "deploy.md").read_text()
    named = {
        m
        for m in re.findall(r"`([a-z][A-Za-z]*(?:\.[a-z][A-Za-z]*)+)", text)
        if isinstance(values.get(m.split(".")[0]), dict)
    }
    assert len(named) > 15
    for path in named:
        node = values
        for part in path.split("."):
            assert isinstance(node, dict) and part in node, f"docs/deploy.md names {path}, not in values.yaml"
            node = node[part]


# --- MCP servers --------------------------------------------------------------------------------------


def test_mcp_servers_render_a_config_map_and_mount_token_secrets(report: dict[str, Any]) -> None:
    from aibridge.proxy.mcp import AuthKind, parse_servers

    found = objects(report, "mcp")
    proxy = env_of(found, "proxy")
    assert proxy["AIBRIDGE_MCP_SERVERS_FILE"]["value"] == "/etc/aibridge/mcp/servers.yaml"
    assert proxy["AIBRIDGE_MCP_CALL_TIMEOUT"]["value"] == "20" and proxy["AIBRIDGE_MCP_MAX_ROUNDS"]["value"] == "4"
    assert "AIBRIDGE_MCP_SERVERS_FILE" not in env_of(found, "api")
    text = one(found, "ConfigMap", "bridge-aibridge-mcp-servers")["data"]["servers.yaml"]
    with pytest.raises(ValueError, match="cannot read /etc/aibridge/mcp-tokens/github/token"):
        parse_servers(text, "servers.yaml")  # the proxy's own parser: the file is valid up to the mounted token
    files = yaml.safe_load(text)["servers"]
    assert [(s["name"], s.get("auth", {}).get("kind", "none")) for s in files] == [
        ("docs", "none"),
        ("github", "bearer"),
        ("jira", "forward"),
        ("wiki", "forward"),
    ]
    assert files[1]["auth"]["token_file"] == "/etc/aibridge/mcp-tokens/github/token"
    assert files[1]["tool_allow_regex"] == "^(search|get)_" and files[1]["tool_deny_regex"] == "delete"
    assert files[2]["auth"]["discovery_token_file"] == "/etc/aibridge/mcp-tokens/jira/token"
    assert {AuthKind(s["auth"]["kind"]) for s in files[1:]} == {AuthKind.BEARER, AuthKind.FORWARD}
    pod = one(found, "Deployment", "bridge-aibridge-proxy")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["mcp-servers"]["configMap"]["name"] == "bridge-aibridge-mcp-servers"
    assert volumes["mcp-token-github"]["secret"]["secretName"] == "mcp-tokens"
    assert volumes["mcp-token-github"]["secret"]["items"] == [{"key": "github", "path": "token"}]
    assert volumes["mcp-token-jira"]["secret"]["items"] == [{"key": "token", "path": "token"}]
    assert "mcp-token-docs" not in volumes and "mcp-token-wiki" not in volumes
    mounts = {m["name"]: m["mountPath"] for m in container(found, "proxy")["volumeMounts"]}
    assert mounts["mcp-servers"] == "/etc/aibridge/mcp"
    assert mounts["mcp-token-github"] == "/etc/aibridge/mcp-tokens/github"


def test_mcp_is_off_by_default_and_a_mounted_file_is_passed_through(report: dict[str, Any]) -> None:
    required = objects(report, "required")
    assert not any(name.startswith("AIBRIDGE_MCP_") for name in env_of(required, "proxy"))
    assert not [o for o in required if o["metadata"]["name"] == "bridge-aibridge-mcp-servers"]
    own_file = objects(report, "mcp_file")
    assert env_of(own_file, "proxy")["AIBRIDGE_MCP_SERVERS_FILE"]["value"] == "/etc/mine/servers.yaml"
    assert not [o for o in own_file if o["metadata"]["name"] == "bridge-aibridge-mcp-servers"]


def test_spend_prices_and_groups_render_a_config_map_every_component_reads(report: dict[str, Any]) -> None:
    from decimal import Decimal

    from aibridge import groups, pricing

    found = objects(report, "spend")
    data = one(found, "ConfigMap", "bridge-aibridge-spend")["data"]
    prices = pricing.parse(yaml.safe_load(data["prices.yaml"]), "prices.yaml")  # the services' own parsers
    assert prices.checked == "2026-12-01"
    assert prices.models["house-coder"].rates.output == Decimal("0.30")
    assert groups.parse(yaml.safe_load(data["groups.yaml"]), "groups.yaml").groups_of("u", "alice") == (
        "platform",
        "research",
    )
    for component in COMPONENTS:
        env = env_of(found, component)
        assert env["AIBRIDGE_PRICES_FILE"]["value"] == "/etc/aibridge/spend/prices.yaml"
        assert env["AIBRIDGE_GROUPS_FILE"]["value"] == "/etc/aibridge/spend/groups.yaml"
        mounts = {m["name"]: m["mountPath"] for m in container(found, component)["volumeMounts"]}
        assert mounts["spend"] == "/etc/aibridge/spend"
    required = objects(report, "required")
    assert not [o for o in required if o["metadata"]["name"] == "bridge-aibridge-spend"]
    assert "AIBRIDGE_PRICES_FILE" not in env_of(required, "api")
