"""Cost in the API: per token usage and interception, and /usage by user, group, model, provider, client
and day, with exact sums, unpriced traffic and the members-see-their-own rule."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_rows import BASE, INTERCEPTION_COLUMNS, TOKEN_COLUMNS, Spec, api_settings, new_database, user_id
from clickhouse_connect.driver.client import Client

from aibridge import cli, pricing, store
from aibridge.api.app import PREFIX, create_api_app
from aibridge.auth import Role, TokenVerifier
from aibridge.testing.server import serve_in_thread

PRICES = pricing.builtin()
GROUPS = "groups:\n  platform: [alice, bob]\n  research: [alice]\n"
SPECS = [
    Spec("alice", "anthropic", "claude-sonnet-4-5", "Claude Code", BASE, input_tokens=1_000, output_tokens=200),
    Spec("alice", "openai", "gpt-5-2025-08-07", "Codex", BASE + timedelta(days=1), input_tokens=3_000),
    Spec("bob", "openai", "gpt-5", "Codex", BASE + timedelta(hours=1), output_tokens=7),
    Spec("bob", "openai", "mystery-model", "Codex", BASE + timedelta(hours=2)),
    Spec("carol", "anthropic", "claude-haiku-4-5", "Claude Code", BASE + timedelta(days=1, hours=3)),
]


def cost_of(spec: Spec) -> Decimal | None:
    tokens = pricing.Tokens(spec.input_tokens, spec.output_tokens, spec.cache_read, spec.cache_write)
    return PRICES.cost(spec.provider, spec.model, tokens)


@pytest.fixture(scope="module")
def api_url(chdb_url: str, verifier: TokenVerifier, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    client = new_database(chdb_url)
    insert_priced(client, SPECS)
    groups_file = Path(tmp_path_factory.mktemp("groups")) / "groups.yaml"
    groups_file.write_text(GROUPS)
    settings = api_settings(chdb_url, client).model_copy(update={"groups_file": groups_file})
    with serve_in_thread(create_api_app(settings, client, verifier)) as url:
        yield url


def insert_priced(client: Client, specs: list[Spec]) -> None:
    for ended in (False, True):
        rows = [spec.interception_row(ended) for spec in specs]
        client.insert(store.INTERCEPTIONS, rows, column_names=list(INTERCEPTION_COLUMNS))
    tokens = [[*row, cost_of(spec)] for spec in specs for row in spec.child_rows()[store.TOKEN_USAGES]]
    client.insert(store.TOKEN_USAGES, tokens, column_names=[*TOKEN_COLUMNS, "cost"])


@pytest.fixture
def get(api_url: str, make_token: Callable[..., str]) -> Iterator[Callable[..., Any]]:
    clients: list[httpx.Client] = []

    def call(who: str, path: str, **params: Any) -> Any:
        role = Role.MEMBER if who in ("alice", "bob") else Role.AUDITOR
        client = httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {make_token(who, role)}"})
        clients.append(client)
        answer = client.get(f"{PREFIX}{path}", params=params)
        assert answer.status_code == 200, answer.text
        return answer.json()

    yield call
    for client in clients:
        client.close()


def usage(get: Callable[..., Any], who: str, **params: Any) -> dict[str, dict[str, Any]]:
    return {row["key"]: row for row in get(who, "/usage", **params)["results"]}


def total(specs: list[Spec]) -> str | None:
    priced = [cost for cost in map(cost_of, specs) if cost is not None]
    return pricing.format_cost(sum(priced, Decimal(0))) if priced else None


def test_interceptions_and_their_token_usages_carry_their_cost(get: Callable[..., Any]) -> None:
    results = {row["model"]: row for row in get("audrey", "/interceptions")["results"]}
    sonnet = results["claude-sonnet-4-5"]
    expected = pricing.format_cost(cost_of(SPECS[0]))
    assert sonnet["token_usages"][0]["cost"] == expected == sonnet["cost"]
    assert sonnet["cost_unpriced"] is False
    assert Decimal(expected or "") == Decimal("0.0064875")  # 1000 x 3 + 200 x 15 + 1000 x 0.30 + 50 x 3.75
    mystery = results["mystery-model"]
    assert mystery["token_usages"][0]["cost"] is None and mystery["cost"] is None and mystery["cost_unpriced"]


@pytest.mark.parametrize(
    ("group_by", "key_of"),
    [
        ("user", lambda s: user_id(s.username)),
        ("model", lambda s: s.model),
        ("provider", lambda s: s.provider),
        ("client", lambda s: s.client),
        ("day", lambda s: f"{s.started_at:%Y-%m-%d}"),
    ],
)
def test_usage_sums_cost_and_tokens_by_each_key(
    get: Callable[..., Any], group_by: str, key_of: Callable[[Spec], str]
) -> None:
    rows = usage(get, "audrey", group_by=group_by)
    assert set(rows) == {key_of(spec) for spec in SPECS}
    for key, row in rows.items():
        members = [spec for spec in SPECS if key_of(spec) == key]
        assert row["keys"] == {group_by: key}
        assert row["cost"] == total(members)
        assert row["interceptions"] == len(members)
        assert row["input_tokens"] == sum(spec.input_tokens for spec in members)
        assert row["unpriced_interceptions"] == sum(cost_of(spec) is None for spec in members)


def test_a_user_counts_in_each_of_their_groups_and_the_ungrouped_under_an_empty_name(
    get: Callable[..., Any],
) -> None:
    rows = usage(get, "audrey", group_by="group")
    alice, bob, carol = ([s for s in SPECS if s.username == name] for name in ("alice", "bob", "carol"))
    assert rows["platform"]["cost"] == total(alice + bob)
    assert rows["research"]["cost"] == total(alice)
    assert rows[""]["cost"] == total(carol)
    assert rows["platform"]["interceptions"] == 4 and rows["platform"]["unpriced_interceptions"] == 1


def test_usage_by_several_keys(get: Callable[..., Any]) -> None:
    rows = usage(get, "audrey", group_by="group,provider")
    assert rows["platform|openai"]["keys"] == {"group": "platform", "provider": "openai"}
    assert rows["platform|openai"]["cost"] == total([SPECS[1], SPECS[2], SPECS[3]])
    by_user_day = usage(get, "audrey", group_by="user,day")
    assert by_user_day[f"{user_id('alice')}|2026-11-02"]["initiator"] == {"id": user_id("alice"), "username": "alice"}


def test_a_member_sees_only_their_own_usage_even_by_group(get: Callable[..., Any]) -> None:
    rows = usage(get, "bob", group_by="group")
    assert set(rows) == {"platform"}
    assert rows["platform"]["cost"] == total([SPECS[2], SPECS[3]])


def test_a_window_limits_the_report(get: Callable[..., Any]) -> None:
    after = f"{BASE + timedelta(hours=12):%Y-%m-%dT%H:%M:%SZ}"
    rows = usage(get, "audrey", group_by="model", started_after=after)
    assert set(rows) == {"gpt-5-2025-08-07", "claude-haiku-4-5"}


def test_unpriced_models_are_listed_with_counts(get: Callable[..., Any]) -> None:
    body = get("audrey", "/usage", group_by="model", unpriced="true")
    assert body["unpriced_models"] == [
        {"provider": "openai", "model": "mystery-model", "token_usages": 1, "interceptions": 1}
    ]
    assert body["prices_checked"] == PRICES.checked
    assert get("audrey", "/usage")["unpriced_models"] is None
    assert get("alice", "/usage", unpriced="true")["unpriced_models"] == []


def run_cli(capsys: pytest.CaptureFixture[str], api_url: str, token: str, *args: str) -> tuple[int, str, str]:
    status = cli.main(["usage", "--url", api_url, "--token", token, *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_cli_usage_as_table_csv_and_json(
    capsys: pytest.CaptureFixture[str], api_url: str, make_token: Callable[..., str]
) -> None:
    token = make_token("audrey", Role.AUDITOR)
    status, out, _ = run_cli(capsys, api_url, token, "--group-by", "group,model", "-o", "csv")
    assert status == 0
    rows = {(row["group"], row["model"]): row for row in csv.DictReader(io.StringIO(out))}
    assert rows[("platform", "mystery-model")]["cost_usd"] == "-"
    assert rows[("platform", "mystery-model")]["unpriced_interceptions"] == "1"
    assert rows[("", "claude-haiku-4-5")]["cost_usd"] == total([SPECS[4]])

    status, out, _ = run_cli(capsys, api_url, token, "--group-by", "user", "--since", "2026-11-02T00:00:00Z")
    header, *lines = out.splitlines()
    assert status == 0 and header.split()[:2] == ["USER", "INTERCEPTIONS"] and "COST $" in header
    assert sorted(line.split()[0] for line in lines) == ["alice", "carol"]

    status, out, _ = run_cli(capsys, api_url, token, "--group-by", "day", "-o", "json")
    assert status == 0 and json.loads(out)["group_by"] == "day"


def test_cli_usage_unpriced_and_errors(
    capsys: pytest.CaptureFixture[str], api_url: str, make_token: Callable[..., str]
) -> None:
    token = make_token("audrey", Role.AUDITOR)
    status, out, _ = run_cli(capsys, api_url, token, "--unpriced")
    assert status == 0
    assert out.splitlines()[1].split() == ["openai", "mystery-model", "1", "1"]
    status, out, err = run_cli(capsys, api_url, token, "--group-by", "planet")
    assert (status, out) == (1, "")
    assert "group_by=planet: unknown key 'planet'" in err
