"""The access audit record: its schema and examples, the client address, and the log line every
audited request writes (the API here has no bus, as in the embedded mode)."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable

import httpx
import jsonschema
import orjson
import pytest
from api_rows import Spec, user_id

from aibridge.api.audit import SCHEMA_PATH, InvalidRecord, client_ip, example_records, validate_record
from aibridge.api.settings import ApiSettings, parse_networks

PREFIX = "/api/v2/aibridge"
REFERENCE = jsonschema.Draft202012Validator(orjson.loads(SCHEMA_PATH.read_bytes()))
AsUser = Callable[[str], httpx.Client]


def test_schema_is_valid_draft_2020_12() -> None:
    jsonschema.Draft202012Validator.check_schema(orjson.loads(SCHEMA_PATH.read_bytes()))


@pytest.mark.parametrize("name", sorted(example_records()))
def test_examples_validate(name: str) -> None:
    record = example_records()[name]
    REFERENCE.validate(record)
    assert validate_record(record) == record


def test_there_are_examples_of_a_list_an_export_a_page_and_a_denial() -> None:
    records = example_records().values()
    assert {r["action"] for r in records} >= {"interceptions.list", "interceptions.export", "session.page"}
    assert {r["result"]["outcome"] for r in records} >= {"allowed", "denied"}


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda r: r["actor"].pop("token_id"), "token_id"),
        (lambda r: r["actor"].update(token="eyJhbGciOi..."), "actor"),
        (lambda r: r["result"].update(prompts=["hello"]), "result"),
        (lambda r: r.update(action="interceptions.delete"), "action"),
        (lambda r: r["result"].update(rows=-1), "rows"),
        (lambda r: r.update(schema_version=2), "schema_version"),
        (lambda r: r.update(event_id="not-a-uuid"), "event_id"),
    ],
)
def test_invalid_records_are_rejected(mutate: Callable[[dict[str, object]], object], reason: str) -> None:
    record = copy.deepcopy(example_records()["list_everyone"])
    mutate(record)
    with pytest.raises(InvalidRecord, match=reason):
        validate_record(record)
    with pytest.raises(jsonschema.ValidationError):
        REFERENCE.validate(record)


TRUSTED = parse_networks("127.0.0.1, 10.0.0.0/8")


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "expected"),
    [
        ("192.0.2.7", None, "192.0.2.7"),
        ("192.0.2.7", "203.0.113.9", "192.0.2.7"),  # an untrusted peer cannot name another client
        ("127.0.0.1", "203.0.113.9", "203.0.113.9"),
        ("127.0.0.1", "198.51.100.1, 203.0.113.9, 10.1.2.3", "203.0.113.9"),  # the first untrusted from the right
        ("127.0.0.1", "10.9.9.9, 10.1.2.3", "10.9.9.9"),  # every hop trusted: the farthest one
        ("127.0.0.1", "203.0.113.9, not-an-ip", "127.0.0.1"),  # garbage from a trusted hop: that hop
        ("127.0.0.1", "", "127.0.0.1"),
        ("", "203.0.113.9", ""),
    ],
)
def test_client_ip(peer: str, forwarded_for: str | None, expected: str) -> None:
    assert client_ip(peer, forwarded_for, TRUSTED) == expected


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    assert client_ip("127.0.0.1", "203.0.113.9", ()) == "127.0.0.1"


def test_a_bad_trusted_proxy_setting_names_the_entry() -> None:
    with pytest.raises(ValueError, match=r"'10\.0\.0\.300'"):
        ApiSettings(api_trusted_proxies="10.0.0.0/8, 10.0.0.300")


def audit_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [r.audit for r in caplog.records if r.name == "aibridge.audit"]  # type: ignore[attr-defined]


def test_an_auditor_listing_everyone_writes_one_log_record(
    as_user: AsUser, specs: list[Spec], tokens: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    q = 'provider:anthropic client:"Claude Code"'
    answer = as_user("auditor").get(f"{PREFIX}/interceptions", params={"q": q, "limit": 3})
    assert answer.status_code == 200
    [record] = audit_lines(caplog)
    validate_record(record)
    assert record["action"] == "interceptions.list"
    assert record["actor"] == {
        "user_id": user_id("audrey"),
        "username": "audrey",
        "role": "auditor",
        "token_id": record["actor"]["token_id"],  # type: ignore[index]
    }
    assert record["request"] == {
        "method": "GET",
        "path": f"{PREFIX}/interceptions",
        "q": q,
        "filters": {"provider": "anthropic", "client": "Claude Code"},
        "pagination": {"limit": 3, "offset": None, "after_id": None},
    }
    matching = [s for s in specs if s.provider == "anthropic" and s.client == "Claude Code"]
    assert record["result"] == {"status": 200, "outcome": "allowed", "rows": 3, "matched": len(matching), "error": None}
    assert record["source"]["ip"] == record["source"]["peer"] == "127.0.0.1"  # type: ignore[index]
    text = orjson.dumps(record).decode()
    assert tokens["auditor"] not in text
    assert not any(prompt["prompt"] in text for r in answer.json()["results"] for prompt in r["user_prompts"])


def test_a_member_denied_someone_elses_is_recorded(as_user: AsUser, caplog: pytest.LogCaptureFixture) -> None:
    answer = as_user("alice").get(f"{PREFIX}/interceptions", params={"q": "initiator:bob", "offset": 5})
    assert answer.status_code == 403
    [record] = audit_lines(caplog)
    assert record["actor"]["username"] == "alice"  # type: ignore[index]
    assert record["request"]["filters"] == {"initiator": "bob"}  # type: ignore[index]
    assert record["request"]["pagination"] == {"limit": 100, "offset": 5, "after_id": None}  # type: ignore[index]
    assert record["result"] == {
        "status": 403,
        "outcome": "denied",
        "rows": 0,
        "matched": None,
        "error": answer.json()["message"],
    }


def test_a_q_that_does_not_parse_is_recorded_as_sent(as_user: AsUser, caplog: pytest.LogCaptureFixture) -> None:
    answer = as_user("bob").get(f"{PREFIX}/interceptions", params={"q": "colour:blue"})
    assert answer.status_code == 400
    [record] = audit_lines(caplog)
    assert record["request"]["q"] == "colour:blue"  # type: ignore[index]
    assert record["request"]["filters"] == {}  # type: ignore[index]
    assert record["result"]["outcome"] == "invalid"  # type: ignore[index]


def test_routes_without_prompts_and_unauthenticated_requests_write_no_record(
    as_user: AsUser, api_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    auditor = as_user("auditor")
    for path in ("/models", "/clients", "/providers", "/usage"):
        assert auditor.get(f"{PREFIX}{path}").status_code == 200
    assert httpx.get(f"{api_url}{PREFIX}/interceptions").status_code == 401
    assert audit_lines(caplog) == []


def test_the_log_line_is_written_whatever_the_log_level(as_user: AsUser, caplog: pytest.LogCaptureFixture) -> None:
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.WARNING)  # AIBRIDGE_LOG_LEVEL=WARNING
    try:
        assert as_user("alice").get(f"{PREFIX}/interceptions").status_code == 200
    finally:
        root.setLevel(level)
    assert [record["actor"]["username"] for record in audit_lines(caplog)] == ["alice"]  # type: ignore[index]
