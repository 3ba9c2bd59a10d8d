"""No planted secret leaves the proxy: secrets in prompts and in tool inputs, through the real proxy with
the official SDKs (chat completions, Responses and Anthropic messages, blocking and streamed), then
every byte the proxy let out is searched for them — the Kafka records (keys, values, headers), the
rows the recorder's own processing stores in ClickHouse (chDB), the log records (as JSON lines and
as plain lines), the spans, the metrics, the bodies of the errors the proxy writes itself, and an
upstream error that quotes the request. The provider still receives every secret unchanged.

The capture modes: ``full`` keeps the text minus the precise secret shapes, ``metadata`` keeps no
prompt text and no tool input but tool names, tokens and the rest.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from clickhouse_connect.driver.client import Client
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import generate_latest
from proxy_support import Proxy, ProxyFactory, Simulator, ended_count, of_type

from aibridge import store, telemetry
from aibridge.events import Event, decode_event
from aibridge.logs import JsonFormatter
from aibridge.recorder.rows import COLUMNS, process_event

pytestmark = pytest.mark.kafka

PEM_BODY = (
    "MIIEpAIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun",
    "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK",
)
GCP_BODY = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7Zq9xLw3vR8"
# One per rule kind: (how it appears in the text, the secret values that must never leave).
PLANTED: dict[str, tuple[str, tuple[str, ...]]] = {
    "openai_key": (
        "OPENAI_API_KEY=sk-proj-Tq3V9xL2mR8wK4pZ7nB1cY6hJ0sD5fGa",
        ("sk-proj-Tq3V9xL2mR8wK4pZ7nB1cY6hJ0sD5fGa",),
    ),
    "anthropic_key": (
        "key sk-ant-api03-q2W8e4R6t1Y3u5I7o9P0a2S4d6F8g0H1j3K5l7Z9x1C3v5B7n9M1q3W5e7R9t1Y3",
        ("sk-ant-api03-q2W8e4R6t1Y3u5I7o9P0a2S4d6F8g0H1j3K5l7Z9x1C3v5B7n9M1q3W5e7R9t1Y3",),
    ),
    "aws_access_key": ("aws_access_key_id = AKIAQ3EGWM5XK7PLT2ZD", ("AKIAQ3EGWM5XK7PLT2ZD",)),
    "aws_secret_key": (
        "aws_secret_access_key = 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",
        ("Rk7pT2wXq9LmZ4vB8nC1yH6sJ3dF0gA5eU2iO7tK",),
    ),
    "github_token": (
        "GH_TOKEN=ghp_R8mK2pX9qL4vT7wB1nZ6cY3hJ0sD5fGa8eU2",
        ("ghp_R8mK2pX9qL4vT7wB1nZ6cY3hJ0sD5fGa8eU2",),
    ),
    "gitlab_token": ("PRIVATE-TOKEN: glpat-Wq7Zr2Kx9Lp4Vt8Bn1Mc", ("glpat-Wq7Zr2Kx9Lp4Vt8Bn1Mc",)),
    "slack_token": (
        "xoxb-7351924680-2846193750-Qw8Er7Ty6Ui5Op4As3Df",
        ("xoxb-7351924680-2846193750-Qw8Er7Ty6Ui5Op4As3Df",),
    ),
    "slack_webhook": (
        "hook https://hooks.slack.com/services/T04ABCDEF/B05GHIJKL/zY8xW7vU6tS5rQ4pO3nM2lK1",
        ("zY8xW7vU6tS5rQ4pO3nM2lK1",),
    ),
    "jwt": (
        "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJyb290IiwiYWRtaW4iOnRydWV9.kX3v9Qm2Lr8Tz5Wp1Yb7Nc4Hd6Jf0Sa2Ge8Uo3Ik5Vq",
        ("eyJzdWIiOiJyb290IiwiYWRtaW4iOnRydWV9", "kX3v9Qm2Lr8Tz5Wp1Yb7Nc4Hd6Jf0Sa2Ge8Uo3Ik5Vq"),
    ),
    "bearer_token": (
        "Authorization: Bearer 9c2f7e1a4b8d3f6e0a5c9b2d7f1e4a8c3b6d",
        ("9c2f7e1a4b8d3f6e0a5c9b2d7f1e4a8c3b6d",),
    ),
    "url_password": ("postgres://app:Pg-9vX2kQ7mL@db.internal:5432/app", ("Pg-9vX2kQ7mL",)),
    "pem_private_key": (
        "-----BEGIN RSA PRIVATE KEY-----\n" + "\n".join(PEM_BODY) + "\n-----END RSA PRIVATE KEY-----",
        PEM_BODY,
    ),
    "gcp_service_account_key": (
        orjson.dumps(
            {
                "type": "service_account",
                "private_key": f"-----BEGIN PRIVATE KEY-----\n{GCP_BODY}\n-----END PRIVATE KEY-----\n",
                "client_email": "ci@acme-prod.iam.gserviceaccount.com",
            }
        ).decode(),
        (GCP_BODY,),
    ),
    "password": ("mysql --password=Hunt3r-Blue-42 -u root", ("Hunt3r-Blue-42",)),
    "secret": ("api_secret: Zx8kP2qLm9Vt4Rw7Yb3NcQ", ("Zx8kP2qLm9Vt4Rw7Yb3NcQ",)),
}
PRECISE = [kind for kind in PLANTED if kind not in ("password", "secret")]
SECRET_TEXT = "\n".join(text for text, _ in PLANTED.values())
PROMPT = f"Why does the deploy fail? My config:\n{SECRET_TEXT}\nThanks."


def needles(values: tuple[str, ...]) -> set[bytes]:
    """A secret as bytes, JSON-escaped once and twice, and in base64."""
    found: set[bytes] = set()
    for value in values:
        once = orjson.dumps(value)[1:-1]
        found |= {value.encode(), once, orjson.dumps(once.decode())[1:-1], base64.b64encode(value.encode())}
    return found


def leaks(blob: bytes, kinds: list[str]) -> dict[str, list[bytes]]:
    found = {kind: [n for n in needles(PLANTED[kind][1]) if n in blob] for kind in kinds}
    return {kind: hits for kind, hits in found.items() if hits}


def echo_tool_openai() -> dict[str, Any]:
    """A tool whose only argument value is the planted text: the simulator's model picks it (an enum)."""
    parameters = {"type": "object", "properties": {"config": {"type": "string", "enum": [SECRET_TEXT]}}}
    return {
        "type": "function",
        "function": {"name": "write_config", "parameters": parameters | {"required": ["config"]}},
    }


def echo_tool_responses() -> dict[str, Any]:
    return {"type": "function", "name": "write_config", "parameters": echo_tool_openai()["function"]["parameters"]}


def echo_tool_anthropic() -> dict[str, Any]:
    return {"name": "write_config", "input_schema": echo_tool_openai()["function"]["parameters"]}


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    telemetry.configure(True, trace_logs=True, exporter=exporter)
    yield exporter
    telemetry.configure(False)


async def talk(proxy: Proxy, token: str) -> None:
    """Blocking and streamed on each API, the prompt carrying the secrets and a tool echoing them."""
    chat = openai.AsyncOpenAI(base_url=proxy.openai_base_url, api_key=token, max_retries=0, timeout=20)
    messages: Any = [{"role": "user", "content": PROMPT}]
    for stream in (False, True):
        answer = await chat.chat.completions.create(
            model="gpt-4o", messages=messages, tools=[echo_tool_openai()], stream=stream
        )
        if stream:
            async for _ in answer:  # type: ignore[union-attr]
                pass
        answer = await chat.responses.create(model="gpt-5", input=PROMPT, tools=[echo_tool_responses()], stream=stream)
        if stream:
            async for _ in answer:  # type: ignore[union-attr]
                pass
    claude = anthropic.AsyncAnthropic(base_url=proxy.anthropic_base_url, api_key=token, max_retries=0, timeout=20)
    await claude.messages.create(
        model="claude-sonnet-4-5", max_tokens=100, messages=messages, tools=[echo_tool_anthropic()]
    )
    async with claude.messages.stream(
        model="claude-sonnet-4-5", max_tokens=100, messages=messages, tools=[echo_tool_anthropic()]
    ) as streamed:
        await streamed.get_final_message()


async def errors(proxy: Proxy, token: str) -> list[bytes]:
    """Two errors: one the proxy writes itself (a body that is not JSON), one from the provider quoting a
    planted value (OpenAI echoes a role it refuses). Returns the bodies the proxy wrote itself."""
    async with httpx.AsyncClient(timeout=20) as client:
        own = await client.post(
            f"{proxy.openai_base_url}/chat/completions",
            headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
            content=b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "' + SECRET_TEXT.encode() + b'"',
        )
        assert own.status_code == 400
    chat = openai.AsyncOpenAI(base_url=proxy.openai_base_url, api_key=token, max_retries=0, timeout=20)
    with pytest.raises(openai.BadRequestError, match="Invalid value"):
        refused_role: Any = [{"role": SECRET_TEXT, "content": "hi"}]
        await chat.chat.completions.create(model="gpt-4o", messages=refused_role)
    return [own.content]


async def raw_records(bootstrap: str, topic: str, interceptions: int) -> tuple[bytes, list[Event]]:
    """Every record of ``topic`` as bytes (key, value, header names and values) once the interceptions ended."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    blob, events = bytearray(), []
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        for _ in range(150):  # 30 s at most
            if ended_count(interceptions)(events):
                break
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for record in records:
                    blob += (record.key or b"") + record.value
                    for name, value in record.headers:
                        blob += name.encode() + value
                    events.append(decode_event(record.value))
    finally:
        await consumer.stop()
    assert ended_count(interceptions)(events), f"only {len(of_type(events, 'interception.ended'))} ended"
    return bytes(blob), events


def stored(client: Client, events: list[Event]) -> bytes:
    """The events through the recorder's processing into the store; then every row of every table."""
    rows = [process_event(event) for event in events]
    for table in COLUMNS:
        values = [row.values for row in rows if row.table == table]
        if values:
            store.insert(client, table, values, COLUMNS[table])
    tables = [
        row[0] for row in client.query("SELECT name FROM system.tables WHERE database = currentDatabase()").result_rows
    ]
    return "\n".join(repr(client.query(f"SELECT * FROM {table}").result_rows) for table in tables).encode()


def logged(records: list[logging.LogRecord]) -> bytes:
    as_json, plain = JsonFormatter(), logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    lines = [as_json.format(record) + plain.format(record) for record in records]
    return "\n".join(lines).encode()


async def test_no_planted_secret_leaves_the_proxy(
    *,
    start_proxy: ProxyFactory,
    simulator: Simulator,
    token: str,
    kafka_bootstrap: str,
    kafka_topic: str,
    store_client: Client,
    spans: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="aibridge")
    proxy = start_proxy(prompt_capture="redacted")
    await talk(proxy, token)
    own_error_bodies = await errors(proxy, token)
    kafka, events = await raw_records(kafka_bootstrap, kafka_topic, interceptions=8)
    proxy.stop()

    prompts, tools = of_type(events, "prompt"), of_type(events, "tool_usage")
    assert len(prompts) == 6 and len(tools) == 6
    assert all(event["redactions"] == len(PLANTED) and event["capture"] == "redacted" for event in prompts + tools)
    assert all(f"[REDACTED:{kind}]" in event["prompt"] for event in prompts for kind in PLANTED)
    assert all(f"[REDACTED:{kind}]" in event["input"] for event in tools for kind in PLANTED)
    assert all(orjson.loads(event["input"])["config"] for event in tools)  # still the tool's JSON
    refused = [e for e in of_type(events, "interception.ended") if e["status"] == "upstream_error"]
    assert len(refused) == 1 and "Invalid value" in refused[0]["error"] and refused[0]["redactions"] == len(PLANTED)

    everything = {
        "kafka": kafka,
        "store": stored(store_client, events),
        "logs": logged(caplog.records),
        "spans": b"\n".join(span.to_json().encode() for span in spans.get_finished_spans()),
        "metrics": generate_latest(),
        "error bodies": b"\n".join(own_error_bodies),
    }
    assert spans.get_finished_spans() and caplog.records
    assert b"OPENAI_API_KEY=[REDACTED:openai_key]" in everything["store"]  # the text around the secrets is kept
    found = {where: leaks(blob, list(PLANTED)) for where, blob in everything.items()}
    assert found == {where: {} for where in everything}

    forwarded = b"\n".join(request.body for request in simulator.state.requests)
    assert leaks(forwarded, list(PLANTED)).keys() == PLANTED.keys()  # the provider got every secret unchanged
    prompts_sent = [
        orjson.loads(request.body) for request in simulator.state.requests if request.path == "/v1/messages"
    ]
    assert [body["messages"][0]["content"] for body in prompts_sent] == [PROMPT, PROMPT]


async def test_full_capture_keeps_the_text_minus_the_precise_secrets(
    start_proxy: ProxyFactory, token: str, kafka_bootstrap: str, kafka_topic: str
) -> None:
    proxy = start_proxy()  # full is the default
    chat = openai.AsyncOpenAI(base_url=proxy.openai_base_url, api_key=token, max_retries=0, timeout=20)
    await chat.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": PROMPT}],
        tools=[echo_tool_openai()],  # type: ignore[list-item]
    )
    kafka, events = await raw_records(kafka_bootstrap, kafka_topic, interceptions=1)
    assert leaks(kafka, PRECISE) == {}
    assert leaks(kafka, ["password", "secret"]).keys() == {"password", "secret"}  # heuristic rules: redacted mode
    (prompt,) = of_type(events, "prompt")
    assert prompt["capture"] == "full" and prompt["redactions"] == len(PRECISE)
    assert prompt["prompt"].startswith("Why does the deploy fail? My config:\nOPENAI_API_KEY=[REDACTED:openai_key]\n")
    assert of_type(events, "interception.started")[0]["capture"] == "full"


async def test_metadata_capture_keeps_no_prompt_and_no_tool_input(
    start_proxy: ProxyFactory, token: str, kafka_bootstrap: str, kafka_topic: str, store_client: Client
) -> None:
    proxy = start_proxy(prompt_capture="metadata")
    claude = anthropic.AsyncAnthropic(base_url=proxy.anthropic_base_url, api_key=token, max_retries=0, timeout=20)
    await claude.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=100,
        messages=[{"role": "user", "content": "Write the config for ticket ACME-1234"}],
        tools=[echo_tool_anthropic()],  # type: ignore[list-item]
    )
    kafka, events = await raw_records(kafka_bootstrap, kafka_topic, interceptions=1)
    assert b"ACME-1234" not in kafka and leaks(kafka, list(PLANTED)) == {}
    (prompt,), (tool,), (usage,) = (of_type(events, kind) for kind in ("prompt", "tool_usage", "token_usage"))
    assert (prompt["prompt"], prompt["capture"], prompt["redactions"]) == ("", "metadata", 0)
    assert (tool["input"], tool["capture"], tool["tool"]) == ("", "metadata", "write_config")
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert all(event["capture"] == "metadata" for event in of_type(events, "interception.ended"))
    assert b"ACME-1234" not in stored(store_client, events)
    columns = "prompt, capture, redactions"
    assert store_client.query(f"SELECT {columns} FROM {store.USER_PROMPTS}").result_rows == [("", "metadata", 0)]


async def test_metadata_capture_keeps_only_the_kind_of_an_error_quoting_the_request(
    start_proxy: ProxyFactory, token: str, kafka_bootstrap: str, kafka_topic: str, store_client: Client
) -> None:
    """OpenAI quotes a role it refuses: the client gets that answer unchanged, the record only its type."""
    proxy = start_proxy(prompt_capture="metadata")
    chat = openai.AsyncOpenAI(base_url=proxy.openai_base_url, api_key=token, max_retries=0, timeout=20)
    with pytest.raises(openai.BadRequestError, match="ticket ACME-1234") as refused:
        messages: Any = [{"role": "ticket ACME-1234", "content": "hi"}]
        await chat.chat.completions.create(model="gpt-4o", messages=messages)
    assert refused.value.status_code == 400
    kafka, events = await raw_records(kafka_bootstrap, kafka_topic, interceptions=1)
    (ended,) = of_type(events, "interception.ended")
    assert (ended["status"], ended["http_status"], ended["capture"], ended["redactions"]) == (
        "upstream_error",
        400,
        "metadata",
        0,
    )
    assert ended["error"] == "invalid_request_error: [not recorded: capture mode metadata]"
    assert b"ACME-1234" not in kafka
    assert b"ACME-1234" not in stored(store_client, events)
