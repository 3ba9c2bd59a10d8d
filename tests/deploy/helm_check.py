"""Lint and render the Helm chart with several value sets; print the results as JSON.

Runs Helm's own Go code (Helm v4 through ``helm-python-sdk``, no ``helm`` binary needed), in a process
of its own: the pytest process never loads the Go runtime next to chDB. ``scripts/helm-check`` runs
this; ``tests/deploy/test_helm_chart.py`` runs it and asserts on the output.

Output: ``{"helm": version, "lint": report, "cases": {name: {"ok", "error", "manifests"}}}`` where
``manifests`` maps each template path to its rendered text.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "aibridge"
RELEASE, NAMESPACE = "bridge", "ai"


def _key_pair() -> tuple[str, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private.decode(), public.decode()


PRIVATE_KEY, PUBLIC_KEY = _key_pair()

REQUIRED: dict[str, Any] = {
    "kafka": {"bootstrap": "kafka-0.kafka:9092,kafka-1.kafka:9092"},
    "clickhouse": {"url": "https://clickhouse.db.svc:8443"},
    "auth": {"publicKey": PUBLIC_KEY},
}


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    result = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


def without(values: dict[str, Any], section: str, key: str) -> dict[str, Any]:
    return {**values, section: {k: v for k, v in values[section].items() if k != key}}


CASES: dict[str, dict[str, Any]] = {
    "required": REQUIRED,
    "existing_secrets": merged(
        REQUIRED,
        {
            "auth": {"publicKey": "", "existingSecret": "bridge-auth", "existingSecretKey": "pub.pem"},
            "providers": {
                "openai": {"existingSecret": "llm-keys", "existingSecretKey": "openai"},
                "anthropic": {"existingSecret": "llm-keys", "existingSecretKey": "anthropic"},
            },
            "clickhouse": {"existingSecret": "ch-credentials"},
            "kafka": {
                "securityProtocol": "SASL_SSL",
                "sasl": {"mechanism": "SCRAM-SHA-512", "username": "bridge", "existingSecret": "kafka-user"},
            },
        },
    ),
    "full": merged(
        REQUIRED,
        {
            "providers": {
                "openai": {"apiKey": "sk-test-openai", "baseUrl": "https://openai.internal/v1"},
                "anthropic": {"apiKey": "sk-ant-test"},
            },
            "clickhouse": {"username": "bridge", "password": "p@ss word/1"},
            "kafka": {
                "securityProtocol": "SASL_PLAINTEXT",
                "sasl": {"mechanism": "PLAIN", "username": "bridge", "password": "kafka-secret"},
            },
            "auth": {"revokedTokenIds": ["jti-1", "jti-2"]},
            "ingress": {
                "enabled": True,
                "className": "nginx",
                "hosts": ["bridge.example.com"],
                "tls": [{"secretName": "bridge-tls", "hosts": ["bridge.example.com"]}],
            },
            "proxy": {
                "autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 12},
                "env": {"EXTRA_FLAG": "1"},
            },
            "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
            "tracing": {"enabled": True, "otlpEndpoint": "http://otel-collector:4317"},
            "retention": "30d",
            "rateLimits": {"maxRps": 50, "maxConcurrent": 200, "userMaxRpm": 120},
            "budgets": {"enabled": True, "refreshInterval": 5},
            "oidc": {
                "issuer": "https://login.example.com/realms/main",
                "audience": "aibridge-cli",
                "auditorGroups": ["sec-auditors"],
                "adminGroups": ["platform-admins", "sre"],
            },
        },
    ),
    "tls": merged(
        REQUIRED,
        {
            "providers": {"openai": {"apiKey": "sk-test-openai"}},
            "clickhouse": {
                "username": "bridge",
                "password": "ch-secret",
                "tls": {"existingSecret": "ch-tls", "certKey": "tls.crt", "keyKey": "tls.key"},
            },
            "kafka": {
                "securityProtocol": "SASL_SSL",
                "sasl": {"mechanism": "SCRAM-SHA-256", "username": "bridge", "password": "kafka-secret"},
                "tls": {
                    "existingSecret": "kafka-tls",
                    "certKey": "tls.crt",
                    "keyKey": "tls.key",
                    "keyPasswordKey": "key-password",
                },
            },
        },
    ),
    "mcp": merged(
        REQUIRED,
        {
            "mcp": {
                "servers": [
                    {"name": "docs", "url": "https://docs.example/mcp"},
                    {
                        "name": "github",
                        "url": "https://mcp.github.example/mcp",
                        "auth": {"kind": "bearer", "tokenSecret": {"name": "mcp-tokens", "key": "github"}},
                        "toolAllowRegex": "^(search|get)_",
                        "toolDenyRegex": "delete",
                    },
                    {
                        "name": "jira",
                        "url": "https://jira.example/mcp",
                        "auth": {"kind": "forward", "discoveryTokenSecret": {"name": "jira-bot", "key": "token"}},
                    },
                    {"name": "wiki", "url": "http://wiki.example/mcp", "auth": {"kind": "forward"}},
                ],
                "callTimeout": 20,
                "maxRounds": 4,
            }
        },
    ),
    "mcp_file": merged(REQUIRED, {"mcp": {"serversFile": "/etc/mine/servers.yaml"}}),
    "spend": merged(
        REQUIRED,
        {
            "spend": {
                "prices": {
                    "checked": "2026-12-01",
                    "models": {
                        "house-coder": {
                            "provider": "openai",
                            "input": "0.10",
                            "output": "0.30",
                            "cache_read": "0",
                            "cache_write": "0",
                            "aliases": ["house-coder-fast"],
                        },
                    },
                },
                "groups": {"platform": ["alice", "bob"], "research": ["alice"]},
            }
        },
    ),
    "kafka_tls_without_ssl": merged(REQUIRED, {"kafka": {"tls": {"existingSecret": "kafka-tls"}}}),
    "clickhouse_tls_over_http": merged(
        REQUIRED, {"clickhouse": {"url": "http://clickhouse:8123", "tls": {"existingSecret": "ch-tls"}}}
    ),
    "no_clickhouse_url": without(REQUIRED, "clickhouse", "url"),
    "chdb_url": merged(REQUIRED, {"clickhouse": {"url": "chdb:///var/lib/aibridge/store"}}),
    "credentials_in_url": merged(REQUIRED, {"clickhouse": {"url": "http://admin:secret@clickhouse:8123"}}),
    "no_kafka_bootstrap": without(REQUIRED, "kafka", "bootstrap"),
    "no_public_key": without(REQUIRED, "auth", "publicKey"),
    "oidc_without_audience": merged(REQUIRED, {"oidc": {"issuer": "https://login.example.com"}}),
    "private_key_as_public": merged(REQUIRED, {"auth": {"publicKey": PRIVATE_KEY}}),
    "hpa_min_above_max": merged(
        REQUIRED, {"proxy": {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}}}
    ),
    "typo_in_component": merged(REQUIRED, {"proxy": {"replicaCout": 3}}),
    "typo_at_top": merged(REQUIRED, {"clickhouseUrl": "http://clickhouse:8123"}),
}
# Budgets on: the proxy reads the store too, with the same TLS material and credentials.
CASES["tls_budgets"] = merged(CASES["tls"], {"budgets": {"enabled": True}})


DASHBOARD = '{"title": "AI Bridge (test copy)", "panels": []}\n'


def render_case(values: dict[str, Any], chart_dir: Path = CHART) -> dict[str, Any]:
    import helm_python as helm

    try:
        with helm.Chart.load(chart_dir) as chart:
            chart.validate_schema(values)
            manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    except helm.HelmError as error:
        return {"ok": False, "error": str(error), "manifests": {}}
    return {"ok": True, "error": None, "manifests": manifests}


def render_with_dashboard() -> dict[str, Any]:
    """The chart as packaged once deploy/grafana/aibridge-dashboard.json exists (a copy, links followed)."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "aibridge"
        shutil.copytree(CHART, copy)
        (copy / "dashboards" / "aibridge-dashboard.json").write_text(DASHBOARD)
        return render_case(REQUIRED, copy)


def main() -> int:
    import helm_python as helm

    helm.disable_logging()
    cases = {name: render_case(values) for name, values in CASES.items()}
    lint = helm.lint(CHART, REQUIRED, strict=True, namespace=NAMESPACE)
    report = {
        "helm": helm.helm_sdk_version(),
        "lint": lint,
        "cases": cases | {"with_dashboard": render_with_dashboard()},
        "dashboard": DASHBOARD,
    }
    json.dump(report, sys.stdout, indent=1)
    sys.stdout.write("\n")
    lint_errors = [m for m in lint["messages"] if m["severity"] >= 3]
    return 1 if lint_errors or lint["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
