"""Each component starts and becomes ready with the environment, arguments and files the chart gives it.

The rendered Deployment is run the way the kubelet would run it: its env (secretKeyRef read from the
rendered Secret, ``$(NAME)`` expanded), its args, and its volume mounts materialized in a temporary
directory. Only cluster addresses are replaced: the Kafka bootstrap by the test broker (and the topic
by a fresh one), the listen address by a free loopback port, and for the recorder and API the
ClickHouse server URL by the embedded engine, which no ClickHouse server here can stand in for.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from aibridge.testing.broker import free_port

HELM_CHECK = Path(__file__).with_name("helm_check.py")
Manifest = dict[str, Any]


@pytest.fixture(scope="module")
def rendered() -> list[Manifest]:
    completed = subprocess.run(
        [sys.executable, str(HELM_CHECK)], capture_output=True, text=True, timeout=120, check=False
    )
    case = json.loads(completed.stdout)["cases"]["required"]
    assert case["ok"], case["error"]
    texts = [text for path, text in case["manifests"].items() if path.endswith(".yaml")]
    return [doc for text in texts for doc in yaml.safe_load_all(text) if doc]


def find(found: list[Manifest], kind: str, name: str) -> Manifest:
    return next(o for o in found if o["kind"] == kind and o["metadata"]["name"] == name)


def expand(value: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), value)


def container_env(found: list[Manifest], spec: Manifest) -> dict[str, str]:
    env: dict[str, str] = {}
    for entry in spec["env"]:
        if "value" in entry:
            env[entry["name"]] = expand(entry["value"], env)
        else:
            ref = entry["valueFrom"]["secretKeyRef"]
            data = find(found, "Secret", ref["name"])["data"]
            env[entry["name"]] = base64.b64decode(data[ref["key"]]).decode()
    return env


def materialize(found: list[Manifest], pod: Manifest, root: Path) -> dict[str, str]:
    """Write each mounted volume under root; return mountPath -> local directory."""
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts: dict[str, str] = {}
    for mount in pod["containers"][0]["volumeMounts"]:
        local = root / mount["name"]
        local.mkdir(parents=True)
        volume = volumes[mount["name"]]
        if "secret" in volume:
            data = find(found, "Secret", volume["secret"]["secretName"])["data"]
            for item in volume["secret"]["items"]:
                (local / item["path"]).write_bytes(base64.b64decode(data[item["key"]]))
        if "configMap" in volume:
            for key, text in find(found, "ConfigMap", volume["configMap"]["name"])["data"].items():
                (local / key).write_text(text)
        mounts[mount["mountPath"]] = str(local)
    return mounts


def create_database(directory: Path, database: str) -> str:
    """What docs/deploy.md asks of the operator (CREATE DATABASE), in a process of its own: chDB locks
    its data directory for the process that opens it."""
    url = f"chdb://{directory}"
    create = f"import clickhouse_connect as c; c.get_client(dsn={url!r}).command('CREATE DATABASE {database}')"
    subprocess.run([sys.executable, "-c", create], check=True, timeout=120)
    return url


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 45) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the component exited"
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code == 200:
                return response
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} not ready within {timeout}s")


@pytest.mark.slow
@pytest.mark.kafka
@pytest.mark.parametrize("component", ["proxy", "recorder", "api"])
def test_component_gets_ready_with_the_chart_environment(
    rendered: list[Manifest], component: str, kafka_bootstrap: str, kafka_topic: str, tmp_path: Path
) -> None:
    pod = find(rendered, "Deployment", f"bridge-aibridge-{component}")["spec"]["template"]["spec"]
    spec = pod["containers"][0]
    mounts = materialize(rendered, pod, tmp_path / "volumes")
    env = container_env(rendered, spec)
    for name, value in env.items():
        for mount_path, local in mounts.items():
            if value.startswith(mount_path + "/") or value == mount_path:
                env[name] = local + value[len(mount_path) :]
    replaced = {"AIBRIDGE_KAFKA_BOOTSTRAP": kafka_bootstrap, "AIBRIDGE_KAFKA_TOPIC": kafka_topic}
    if "AIBRIDGE_CLICKHOUSE_URL" in env:
        replaced["AIBRIDGE_CLICKHOUSE_URL"] = create_database(tmp_path / "store", env["AIBRIDGE_CLICKHOUSE_DATABASE"])
    env |= {name: value for name, value in replaced.items() if name in env}
    port = free_port()
    args = [*spec["args"][:-1], f"127.0.0.1:{port}"]
    assert spec["args"][-2] == "--listen"
    executable = str(Path(sys.executable).with_name("aibridge"))
    base = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    with (tmp_path / "log").open("wb") as log:
        process = subprocess.Popen([executable, *args], env=base | env, stdout=log, stderr=subprocess.STDOUT)
        try:
            ready = wait_ready(f"http://127.0.0.1:{port}/readyz", process)
            assert ready.json()["status"] == "ready"
            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
            assert metrics.status_code == 200
        except AssertionError:
            log.flush()
            raise AssertionError((tmp_path / "log").read_text()[-3000:]) from None
        finally:
            process.terminate()
            process.wait(timeout=30)
