"""The reasoning event: captured under the prompt capture policy, valid against the schema, stored as a row."""

from __future__ import annotations

import pytest

from aibridge import store
from aibridge.events import InterceptionContext, ReasoningKind, validate_event
from aibridge.recorder.rows import process_event
from aibridge.redaction import CaptureMode, CapturePolicy

SECRET = "sk-ant-api03-" + "x" * 90


def context(mode: CaptureMode) -> InterceptionContext:
    return InterceptionContext(
        initiator_id="u1", initiator_username="alice", provider="anthropic", model="claude-sonnet-4-5",
        client="Claude Code", streaming=True, route="/v1/messages", api_key_id="jti",
        capture=CapturePolicy.build(mode),
    )  # fmt: skip


def test_thinking_is_kept_with_secrets_replaced() -> None:
    event = context(CaptureMode.FULL).reasoning(ReasoningKind.THINKING, f"the key is {SECRET}", "msg_1")
    validate_event(event)
    assert event["type"] == "reasoning" and event["kind"] == "thinking"
    assert SECRET not in event["text"] and "[REDACTED:" in event["text"]
    assert event["redactions"] == 1 and event["provider_response_id"] == "msg_1"


@pytest.mark.parametrize("kind", list(ReasoningKind))
def test_metadata_capture_keeps_no_reasoning_text(kind: ReasoningKind) -> None:
    event = context(CaptureMode.METADATA).reasoning(kind, "private chain of thought")
    validate_event(event)
    assert event["text"] == "" and event["capture"] == "metadata" and event["kind"] == kind.value


def test_a_reasoning_event_is_a_row_of_the_reasoning_table() -> None:
    event = context(CaptureMode.REDACTED).reasoning(ReasoningKind.SUMMARY, "Planning the edit", "resp_1")
    row = process_event(event)
    assert row.table == store.REASONING and row.record_type == "reasoning"
    fields = row.fields()
    assert fields["kind"] == "summary" and fields["text"] == "Planning the edit"
    assert fields["capture"] == "redacted" and fields["interception_id"] == event["interception_id"]
