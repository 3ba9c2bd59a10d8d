"""Which groups a user belongs to: a mapping file (``AIBRIDGE_GROUPS_FILE``), plus the groups the
identity provider names in a token when the caller is known by one.

The file maps a group to its members, each a user id or a username::

    groups:
      platform: [alice, bob]
      data-science: [carol, 7d9c0a52-1f0e-4c55-9f5b-3a2d7e1c9b10]

A user may be in several groups. Stored rows carry the user, not the group, so a report by group
joins users to groups when it is asked (a change to the file applies to past traffic too), and a user
in several groups counts in each. Budgets use the same membership.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

import yaml

NO_GROUP: Final = ""


class GroupsError(ValueError):
    """The groups file cannot be used; the message names the file and the entry."""


class GroupMap:
    def __init__(self, members: Mapping[str, Iterable[str]] | None = None) -> None:
        self._members = {group: frozenset(users) for group, users in (members or {}).items()}
        self._groups: dict[str, set[str]] = {}
        for group, users in self._members.items():
            for user in users:
                self._groups.setdefault(user, set()).add(group)

    @property
    def names(self) -> list[str]:
        return sorted(self._members)

    def members(self, group: str) -> frozenset[str]:
        """The user ids and usernames listed for ``group`` (empty if there is no such group)."""
        return self._members.get(group, frozenset())

    def groups_of(self, user_id: str, username: str = "", claimed: Iterable[str] = ()) -> tuple[str, ...]:
        """The user's groups, sorted: those the file lists them in by id or username, and ``claimed``."""
        found = set(claimed) | self._groups.get(user_id, set()) | self._groups.get(username, set())
        return tuple(sorted(found))


def load(path: Path | None) -> GroupMap:
    """The groups in ``path``; no file means no groups."""
    if path is None:
        return GroupMap()
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise GroupsError(f"{path}: cannot read the groups file: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise GroupsError(f"{path}: not valid YAML: {exc}") from exc
    return parse(document, str(path))


def parse(document: Any, source: str) -> GroupMap:
    if not isinstance(document, dict) or set(document) != {"groups"} or not isinstance(document["groups"], dict):
        raise GroupsError(f"{source}: expected one key, 'groups', mapping each group to a list of users")
    members: dict[str, list[str]] = {}
    for group, users in document["groups"].items():
        if not isinstance(group, str) or not group.strip():
            raise GroupsError(f"{source}: group name {group!r} must be non-empty text")
        if not isinstance(users, list) or not all(isinstance(user, str | int) and str(user) for user in users):
            raise GroupsError(f"{source}: group {group!r} must list user ids or usernames")
        members[group] = [str(user) for user in users]
    return GroupMap(members)
