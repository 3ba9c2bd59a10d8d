"""Which redaction rules can match a text, told in one pass: most texts hold no secret, and then no rule runs.

Every match of a rule's pattern contains one of a few literal strings (``sk-`` for an OpenAI key,
``-----begin`` for a private key, ``token`` for a token assignment). :func:`necessary_literals` reads them
from the compiled pattern's syntax tree, so rules from a user's rules file get them too; a pattern with no
literal that every match must contain (``\\d{6}``) leaves its rule always open. :class:`Prefilter` looks for
every rule's literals at once (Aho-Corasick) in the text's UTF-8 bytes with ASCII letters lowered, and
names the rules with a literal present: the others cannot match and are skipped. When nothing is found
the text costs one pass (about 1 µs per KiB) instead of one pass per pattern.

Lowering the bytes is a superset test for case-sensitive literals; for case-insensitive ones it is exact
for ASCII text. The only other characters that a case-insensitive match or ``str.lower`` takes for an
ASCII letter are the four in :data:`ASCII_LOOKALIKES`; a text holding one opens every case-insensitive rule.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from re import _parser  # type: ignore[attr-defined]  # the re module's own parser (sre_parse before 3.11)
from typing import Any, Final, Protocol

from ahocorasick_rs import BytesAhoCorasick, MatchKind

_C: Final[Any] = _parser  # the opcodes are in the parser's namespace
ASCII_LOOKALIKES: Final = "\u212a\u017f\u0130\u0131"  # Kelvin sign, long s, dotted and dotless I
_PRODUCT_LIMIT: Final = 64  # alternatives kept when spelling out a class or an alternation
_CLASS_LIMIT: Final = 8  # characters of a class spelled out as literals

Literals = frozenset[str]


class GatedRule(Protocol):
    @property
    def patterns(self) -> tuple[re.Pattern[str], ...]: ...
    @property
    def lowered(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class _Found:
    """What a piece of a pattern matches: ``exact``, every string it can match (None: too many to
    list); ``required``, strings one of which each of its matches contains; ``prefix``, strings one of
    which each of its matches starts with (None: nothing known)."""

    exact: Literals | None
    required: Literals | None
    prefix: Literals | None = None

    def __post_init__(self) -> None:
        if self.exact is not None:
            object.__setattr__(self, "prefix", self.exact)


_UNKNOWN: Final = _Found(None, None)
_EMPTY: Final = _Found(frozenset({""}), None)


def _product(left: Literals, right: Literals | None) -> Literals | None:
    if right is None or len(left) * len(right) > _PRODUCT_LIMIT:
        return None
    return frozenset(a + b for a in left for b in right)


def necessary_literals(pattern: re.Pattern[str], lowered: bool = False) -> Literals | None:
    """Strings one of which every match of ``pattern`` contains, in lower case when the match ignores case
    (``lowered``: the pattern runs on lower-cased text); None when no such set is known."""
    ignore_case = lowered or bool(pattern.flags & re.IGNORECASE)
    tree = _parser.parse(pattern.pattern, pattern.flags)
    found = _sequence(list(tree), ignore_case)
    return _best(found.required, found.exact)


def _best(*candidates: Literals | None) -> Literals | None:
    """The most selective set: its shortest string longest, then the fewest strings."""
    usable = [c for c in candidates if c and "" not in c and len(c) <= _PRODUCT_LIMIT]
    if not usable:
        return None
    return max(usable, key=lambda c: (min(map(len, c)), -len(c)))


def _sequence(nodes: Sequence[tuple[Any, Any]], ignore_case: bool) -> _Found:
    run: Literals = frozenset({""})  # the exact strings of the items since the last inexact one
    required: Literals | None = None
    prefix: Literals | None = None
    broken = False
    for node in nodes:
        found = _node(node, ignore_case)
        joined = _product(run, found.exact)
        if joined is not None:
            run = joined
            continue
        leading = _product(run, found.prefix)  # the run, then how the item starts
        prefix = (leading or run) if not broken else prefix
        required = _best(required, run, leading, found.required)
        broken = True
        run = found.exact if found.exact is not None else frozenset({""})
    if not broken:
        return _Found(run, _best(run))
    return _Found(None, _best(required, run), prefix)


def _node(node: tuple[Any, Any], ignore_case: bool) -> _Found:
    op, value = node
    if op is _C.LITERAL:
        return _Found(_characters([value], ignore_case), None)
    if op is _C.IN:
        return _Found(_class(value, ignore_case), None)
    if op is _C.BRANCH:
        return _branch([_sequence(list(seq), ignore_case) for seq in value[1]])
    if op is _C.SUBPATTERN:
        _group, add_flags, del_flags, seq = value
        if (add_flags | del_flags) & re.IGNORECASE:
            return _UNKNOWN  # the case rule changes inside: nothing said about it
        return _sequence(list(seq), ignore_case)
    if op is _C.ATOMIC_GROUP:
        return _sequence(list(value), ignore_case)
    if op in (_C.MAX_REPEAT, _C.MIN_REPEAT, _C.POSSESSIVE_REPEAT):
        return _repeat(value, ignore_case)
    if op in (_C.AT, _C.ASSERT, _C.ASSERT_NOT):
        return _EMPTY  # zero-width: the match there is the empty string
    return _UNKNOWN


def _characters(codes: Iterable[int], ignore_case: bool) -> Literals | None:
    chars = [chr(code) for code in codes]
    if ignore_case:
        if not all(char.isascii() for char in chars):
            return None
        chars = [char.lower() for char in chars]
    return frozenset(chars)


def _class(items: Sequence[tuple[Any, Any]], ignore_case: bool) -> Literals | None:
    codes: list[int] = []
    for op, value in items:
        if op is _C.LITERAL:
            codes.append(value)
        elif op is _C.RANGE and value[1] - value[0] < _CLASS_LIMIT:
            codes.extend(range(value[0], value[1] + 1))
        else:
            return None  # a negation, a category or a wide range
    return _characters(codes, ignore_case) if len(codes) <= _CLASS_LIMIT else None


def _branch(alternatives: list[_Found]) -> _Found:
    exact: Literals | None = None
    if all(found.exact is not None for found in alternatives):
        exact = frozenset().union(*(found.exact or () for found in alternatives))
        exact = exact if len(exact) <= _PRODUCT_LIMIT else None
    chosen = [_best(found.required, found.exact) for found in alternatives]
    required = None if any(c is None for c in chosen) else frozenset().union(*(c or () for c in chosen))
    prefixes = [found.prefix for found in alternatives]
    prefix = None if any(p is None for p in prefixes) else frozenset().union(*(p or () for p in prefixes))
    return _Found(exact, required, prefix if exact is None else None)


def _repeat(value: tuple[int, int, Any], ignore_case: bool) -> _Found:
    low, high, seq = value
    inner = _sequence(list(seq), ignore_case)
    if low == 0:
        if high == 1 and inner.exact is not None:
            return _Found(inner.exact | {""}, None)
        return _UNKNOWN
    required = _best(inner.required, inner.exact)
    if low == high and inner.exact is not None and len(inner.exact) ** low <= _PRODUCT_LIMIT:
        exact: Literals = frozenset({""})
        for _ in range(low):
            exact = frozenset(a + b for a in exact for b in inner.exact)
        return _Found(exact, required)
    return _Found(None, required, inner.prefix)


def rule_literals(rule: GatedRule) -> Literals | None:
    """The literals of all of a rule's patterns, or None when one pattern has none (the rule always runs)."""
    literals: set[str] = set()
    for pattern in rule.patterns:
        found = necessary_literals(pattern, rule.lowered)
        if found is None:
            return None
        literals |= found
    return frozenset(literals)


def _ignores_case(rule: GatedRule) -> bool:
    return rule.lowered or any(pattern.flags & re.IGNORECASE for pattern in rule.patterns)


def _may_hide(found: bytes, other: bytes) -> bool:
    """Whether an occurrence of ``other`` can go unreported beside a reported match of ``found``: the
    search reports matches that do not overlap, so one starting inside another is passed over."""
    if other in found:
        return True
    return any(found.endswith(other[:size]) for size in range(1, min(len(found), len(other) - 1) + 1))


class Prefilter:
    """The rules (by position) that may match a text; built once per rule table.

    The search reports the leftmost-longest matches that do not overlap (its fast mode); a literal passed
    over because it starts inside a reported one is accounted for by opening, with each literal, the rules
    of every literal that could start inside it (:func:`_may_hide`)."""

    __slots__ = ("_always", "_automaton", "_case_insensitive", "_owners")

    def __init__(self, rules: Sequence[GatedRule]) -> None:
        owners: dict[bytes, set[int]] = {}
        always: set[int] = set()
        for index, rule in enumerate(rules):
            literals = rule_literals(rule)
            if literals is None:
                always.add(index)
                continue
            for literal in literals:
                owners.setdefault(literal.encode("utf-8", "surrogatepass").lower(), set()).add(index)
        needles = list(owners)
        self._automaton = BytesAhoCorasick(needles, matchkind=MatchKind.LeftmostLongest) if needles else None
        self._owners = tuple(
            frozenset().union(*(owners[other] for other in needles if _may_hide(needle, other))) for needle in needles
        )
        self._always = frozenset(always)
        self._case_insensitive = frozenset(i for i, rule in enumerate(rules) if _ignores_case(rule))

    def open(self, text: str) -> frozenset[int]:
        """The positions of the rules that may match ``text``; the others find nothing in it."""
        if self._automaton is None:
            return self._always
        folded = text.encode("utf-8", "surrogatepass").lower()
        matches = self._automaton.find_matches_as_indexes(folded)
        opened = self._always.union(*(self._owners[needle] for needle, _, _ in matches))
        if not text.isascii() and any(char in text for char in ASCII_LOOKALIKES):
            opened |= self._case_insensitive
        return opened
