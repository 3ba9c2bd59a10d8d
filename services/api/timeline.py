"""A thread of a session as the steps a person reads on the session page (pure functions).

One thread is a human prompt and the agentic loop it set off. Its steps, in order: the **prompt**; then
for each interception (one round trip to the model) the **results** of the previous round's tool calls
when the client sent them back, the model's **reasoning** where it is kept, and either its **tool calls**
or, on the round that called no tool, its **answer** (the answer's text is not recorded: its tokens,
status and time are). Tokens and times are formatted here, so the templates only place them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

from aibridge.events import Status, Turn

Row = dict[str, Any]
StepKind = Literal["prompt", "results", "reasoning", "tool_calls", "answer", "error"]
TOKEN_FIELDS: Final = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_write_input_tokens")


@dataclass(frozen=True, slots=True)
class ToolCall:
    tool: str
    input: str
    injected: bool
    server_url: str
    error: str


@dataclass(frozen=True, slots=True)
class Step:
    kind: StepKind
    title: str
    at: str
    text: str = ""
    detail: str = ""
    tools: tuple[ToolCall, ...] = field(default_factory=tuple)


def when(text: str | None) -> str:
    """An RFC 3339 time to the second, in UTC (``2026-12-04T22:58:26Z``); empty for none."""
    if not text:
        return ""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).strftime("%Y-%m-%dT%H:%M:%SZ")


def tokens(count: int | None) -> str:
    return "" if count is None else f"{count:,}"


def duration(millis: int | None) -> str:
    if millis is None:
        return "in flight"
    if millis < 1000:
        return f"{millis} ms"
    seconds = millis / 1000
    return f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds // 60)} min {round(seconds % 60)} s"


def usage_line(row: Row) -> str:
    """``1,234 in · 56 out · 1,000 cache read · 0 cache write`` for anything carrying the token fields."""
    names = ("in", "out", "cache read", "cache write")
    return " · ".join(f"{tokens(int(row.get(key) or 0))} {name}" for key, name in zip(TOKEN_FIELDS, names, strict=True))


def steps(thread: Row) -> list[Step]:
    """The thread's steps in the order they happened."""
    result: list[Step] = []
    if thread.get("prompt") is not None:
        result.append(Step("prompt", "Prompt", when(thread["started_at"]), text=thread["prompt"]))
    interceptions: list[Row] = thread.get("interceptions", [])
    for index, interception in enumerate(interceptions):
        result.extend(_round(interception, first=index == 0))
    return result


def _round(interception: Row, *, first: bool) -> list[Step]:
    at = when(interception["started_at"])
    found: list[Step] = []
    if interception.get("turn") == Turn.TOOL_RESULT or (not first and interception.get("turn") != Turn.PROMPT):
        found.append(Step("results", "Tool results sent back", at, detail=_model_line(interception)))
    for item in interception.get("reasoning", []):
        found.append(Step("reasoning", "Reasoning", when(item.get("created_at")) or at, text=_reasoning_text(item)))
    calls = tuple(_tool_call(usage) for usage in interception.get("tool_usages", []))
    usage = _usage_of(interception)
    if calls:
        title = "Tool call" if len(calls) == 1 else f"{len(calls)} tool calls"
        found.append(Step("tool_calls", title, at, detail=usage, tools=calls))
    elif interception.get("status") not in (None, Status.COMPLETED):
        found.append(Step("error", "Failed", at, text=str(interception.get("error") or ""), detail=usage))
    else:
        found.append(Step("answer", "Answer", when(interception.get("ended_at")) or at, detail=usage))
    return found


def _usage_of(interception: Row) -> str:
    sums = {
        key: sum(int(usage.get(key) or 0) for usage in interception.get("token_usages", [])) for key in TOKEN_FIELDS
    }
    status = interception.get("status") or "in flight"
    return f"{_model_line(interception)} · {status} · {usage_line(sums)} tokens"


def _model_line(interception: Row) -> str:
    return f"{interception.get('provider', '')} {interception.get('model', '')}".strip()


def _reasoning_text(item: Row) -> str:
    # Empty when the provider sent it encrypted, or when prompts are captured as metadata only.
    return str(item.get("text") or "") or "(no text: encrypted by the provider, or not captured)"


def _tool_call(usage: Row) -> ToolCall:
    return ToolCall(
        tool=str(usage.get("tool", "")),
        input=str(usage.get("input", "")),
        injected=bool(usage.get("injected")),
        server_url=str(usage.get("server_url") or ""),
        error=str(usage.get("invocation_error") or ""),
    )
