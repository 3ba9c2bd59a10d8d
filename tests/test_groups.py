"""Group membership from the groups file (and claimed groups), and its errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from aibridge import groups
from aibridge.groups import GroupsError


def test_a_user_is_in_every_group_listing_their_id_or_username(tmp_path: Path) -> None:
    path = tmp_path / "groups.yaml"
    path.write_text("groups:\n  platform: [alice, u-2]\n  data: [alice]\n  empty: []\n")
    mapping = groups.load(path)
    assert mapping.names == ["data", "empty", "platform"]
    assert mapping.groups_of("u-1", "alice") == ("data", "platform")
    assert mapping.groups_of("u-2", "bob") == ("platform",)
    assert mapping.groups_of("u-3", "carol") == ()
    assert mapping.groups_of("u-3", "carol", claimed=("sso-devs",)) == ("sso-devs",)
    assert mapping.members("platform") == {"alice", "u-2"}
    assert mapping.members("nope") == frozenset()


def test_no_file_means_no_groups() -> None:
    assert groups.load(None).groups_of("u-1", "alice") == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("platform: [alice]", "expected one key, 'groups'"),
        ("groups: {platform: alice}", "group 'platform' must list user ids or usernames"),
        ("groups: {platform: [[alice]]}", "group 'platform' must list user ids or usernames"),
        ("groups: {'': [alice]}", "group name '' must be non-empty text"),
        ("groups: {a: [", "not valid YAML"),
    ],
)
def test_a_bad_groups_file_is_refused_naming_it(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "groups.yaml"
    path.write_text(text)
    with pytest.raises(GroupsError) as raised:
        groups.load(path)
    assert str(raised.value).startswith(str(path)) and message in str(raised.value)
