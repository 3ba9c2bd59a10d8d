"""GET models, clients, providers (distinct values) and usage (tokens and interceptions per group)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from api_rows import BASE, Spec

PREFIX = "/api/v2/aibridge"
AsUser = Callable[[str], httpx.Client]
GROUP_KEYS: dict[str, Callable[[Spec], str]] = {
    "user": lambda s: s.initiator_id,
    "model": lambda s: s.model,
    "provider": lambda s: s.provider,
    "client": lambda s: s.client,
}


@pytest.mark.parametrize(("path", "column"), [("models", "model"), ("clients", "client"), ("providers", "provider")])
def test_distinct_values_sorted(as_user: AsUser, specs: list[Spec], path: str, column: str) -> None:
    assert as_user("auditor").get(f"{PREFIX}/{path}").json() == sorted({getattr(s, column) for s in specs})


def expected_usage(specs: list[Spec], group_by: str) -> list[dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = defaultdict(dict)
    for spec in specs:
        key = GROUP_KEYS[group_by](spec)
        row = rows[key]
        row["key"] = key
        row["keys"] = {group_by: key}
        row["initiator"] = {"id": spec.initiator_id, "username": spec.username} if group_by == "user" else None
        for name, value in (
            ("interceptions", 1),
            ("input_tokens", spec.input_tokens),
            ("output_tokens", spec.output_tokens),
            ("cache_read_input_tokens", spec.cache_read),
            ("cache_write_input_tokens", spec.cache_write),
        ):
            row[name] = row.get(name, 0) + value
        # these rows are stored without a cost (as before costs were recorded): every usage is unpriced
        row["cost"] = None
        row["unpriced_interceptions"] = row.get("unpriced_interceptions", 0) + 1
    for row in rows.values():
        row["total_tokens"] = sum(
            row[name]
            for name in ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_write_input_tokens")
        )
    return sorted(rows.values(), key=lambda r: (-r["total_tokens"], -r["interceptions"], r["key"]))


@pytest.mark.parametrize("group_by", list(GROUP_KEYS))
def test_usage_counts_every_interception_and_token_once(as_user: AsUser, specs: list[Spec], group_by: str) -> None:
    body = as_user("admin").get(f"{PREFIX}/usage", params={"group_by": group_by}).json()
    assert body["group_by"] == group_by
    assert body["results"] == expected_usage(specs, group_by)


def test_usage_over_a_window_with_filters(as_user: AsUser, specs: list[Spec]) -> None:
    after, before = BASE + timedelta(minutes=10), BASE + timedelta(minutes=40)
    params = {
        "group_by": "model",
        "started_after": f"{after:%Y-%m-%dT%H:%M:%SZ}",
        "started_before": f"{before:%Y-%m-%dT%H:%M:%SZ}",
        "q": "provider:anthropic",
    }
    body = as_user("auditor").get(f"{PREFIX}/usage", params=params).json()
    inside = [s for s in specs if after <= s.started_at < before and s.provider == "anthropic"]
    assert body["results"] == expected_usage(inside, "model")
    assert (body["started_after"], body["started_before"]) == (
        f"{after:%Y-%m-%dT%H:%M:%S.%f}Z",
        f"{before:%Y-%m-%dT%H:%M:%S.%f}Z",
    )


def test_usage_of_nobody_is_empty(as_user: AsUser) -> None:
    body = as_user("admin").get(f"{PREFIX}/usage", params={"q": "initiator:nobody"}).json()
    assert body["results"] == []
