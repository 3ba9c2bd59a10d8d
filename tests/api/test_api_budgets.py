"""Budgets through the API: admins set, list and delete them, each change an audit record; members
see only the budgets that apply to them (the shared store of the API tests, chDB)."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import orjson
import pytest

from aibridge import cli
from aibridge.api.audit import validate_record

PREFIX = "/api/v2/aibridge/budgets"
AsUser = Callable[[str], httpx.Client]


def audit_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [r.audit for r in caplog.records if r.name == "aibridge.audit"]  # type: ignore[attr-defined]


def test_an_admin_sets_changes_lists_and_deletes_a_budget_each_change_audited(
    as_user: AsUser, caplog: pytest.LogCaptureFixture
) -> None:
    admin = as_user("admin")
    caplog.set_level("INFO", "aibridge.audit")
    first = admin.put(f"{PREFIX}/group/eng/month", json={"limit": "80"})
    assert first.status_code == 200, first.text
    assert first.json() | {"updated_at": None} == {
        "scope": "group", "name": "eng", "period": "month", "limit": "80", "warn": "0.8",
        "updated_at": None, "updated_by": "root",
    }  # fmt: skip
    changed = admin.put(f"{PREFIX}/group/eng/month", json={"limit": "100.50", "warn": "0.9"})
    assert changed.json()["limit"] == "100.5" and changed.json()["warn"] == "0.9"
    listed = admin.get(PREFIX).json()
    assert [(b["scope"], b["name"], b["limit"]) for b in listed if b["name"] == "eng"] == [("group", "eng", "100.5")]

    assert admin.delete(f"{PREFIX}/group/eng/month").status_code == 204
    assert not [b for b in admin.get(PREFIX).json() if b["name"] == "eng"]
    assert admin.delete(f"{PREFIX}/group/eng/month").status_code == 404

    records = [validate_record(r) for r in audit_lines(caplog) if r["type"] == "change"]
    assert [(r["action"], r["result"]["status"]) for r in records] == [
        ("budgets.set", 200), ("budgets.set", 200), ("budgets.delete", 204), ("budgets.delete", 404),
    ]  # fmt: skip
    assert records[0]["change"] == {"before": None, "after": {
        "scope": "group", "name": "eng", "period": "month", "limit": "80", "warn": "0.8"}}  # fmt: skip
    assert records[1]["change"]["before"]["limit"] == "80"  # type: ignore[index]
    assert records[1]["change"]["after"]["limit"] == "100.5"  # type: ignore[index]
    assert records[2]["change"] == {"before": records[1]["change"]["after"], "after": None}  # type: ignore[index]


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("group/eng/week", {"limit": "1"}, "period day or month"),
        ("team/eng/month", {"limit": "1"}, "scope must be user or group"),
        ("user/alice/day", {"limit": "-1"}, "limit must be 0 or more"),
        ("user/alice/day", {"limit": "ten"}, "limit must be a decimal number"),
        ("user/alice/day", {"limit": "1", "warn": "1.5"}, "warn must be a share"),
    ],
)
def test_bad_budgets_are_refused_naming_the_value(
    as_user: AsUser, caplog: pytest.LogCaptureFixture, path: str, body: dict[str, str], message: str
) -> None:
    caplog.set_level("INFO", "aibridge.audit")
    answer = as_user("admin").put(f"{PREFIX}/{path}", json=body)
    assert answer.status_code == 400 and message in answer.json()["message"]
    [record] = [r for r in audit_lines(caplog) if r["type"] == "change"]
    assert record["result"] == validate_record(record)["result"]
    assert record["result"]["outcome"] == "invalid"  # type: ignore[index]


def test_members_and_auditors_cannot_change_budgets_and_members_see_only_their_own(
    as_user: AsUser, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", "aibridge.audit")
    for who in ("alice", "auditor"):
        refused = as_user(who).put(f"{PREFIX}/user/alice/day", json={"limit": "1000"})
        assert refused.status_code == 403
    assert [r["result"]["outcome"] for r in audit_lines(caplog) if r["type"] == "change"] == ["denied", "denied"]  # type: ignore[index]
    assert as_user("alice").get(PREFIX).status_code == 403
    assert as_user("auditor").get(PREFIX).status_code == 200

    admin = as_user("admin")
    admin.put(f"{PREFIX}/user/alice/day", json={"limit": "5"})
    admin.put(f"{PREFIX}/user/bob/month", json={"limit": "7"})
    try:
        mine = as_user("alice").get(f"{PREFIX}/me").json()
        assert [(b["name"], b["period"], b["limit"]) for b in mine] == [("alice", "day", "5")]
        assert mine[0]["resets_at"].endswith("T00:00:00.000000Z")
        assert mine[0]["spent"] == "0"
    finally:
        admin.delete(f"{PREFIX}/user/alice/day")
        admin.delete(f"{PREFIX}/user/bob/month")


def test_the_cli_sets_lists_and_removes_budgets(
    api_url: str, tokens: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    admin = ["--url", api_url, "--token", tokens["admin"]]
    assert cli.main(["budgets", "set", "--group", "data", "--limit", "250.00", "--period", "day", *admin]) == 0
    assert "group  data  day     250" in capsys.readouterr().out
    assert cli.main(["budgets", "list", "-o", "json", *admin]) == 0
    listed = orjson.loads(capsys.readouterr().out)
    assert [(b["name"], b["limit"], b["warn"]) for b in listed if b["name"] == "data"] == [("data", "250", "0.8")]
    assert cli.main(["budgets", "rm", "--group", "data", "--period", "day", *admin]) == 0
    assert "removed the day budget of group data" in capsys.readouterr().out

    member = ["--url", api_url, "--token", tokens["alice"]]
    assert cli.main(["budgets", "set", "--user", "alice", "--limit", "1", *member]) == 1
    assert "403: changing budgets needs an admin token" in capsys.readouterr().err
