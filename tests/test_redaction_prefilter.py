"""The redaction prefilter: the literals read from each rule's pattern, the rules it opens for a text, and
that the redactor with it returns exactly what running every rule returns (text and count), over random
texts salted with every kind of secret and with near misses."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aibridge.redaction import BUILTIN_RULES, CaptureMode, CapturePolicy, Redactor, Rule, aligned_lower
from aibridge.redaction_prefilter import ASCII_LOOKALIKES, Prefilter, necessary_literals, rule_literals

FULL = CapturePolicy.build(CaptureMode.FULL).redactor
REDACTED = CapturePolicy.build(CaptureMode.REDACTED).redactor
USER_RULES = (
    *BUILTIN_RULES,
    Rule("employee_id", (re.compile(r"emp-\d{6}", re.IGNORECASE),), heuristic=True),
    Rule("acme_token", (re.compile(r"(?:acme|ACME)_[A-Za-z0-9]{24}"),), word_start=True),
    Rule("ticket", (re.compile(r"\b[A-Z]{2,5}\d{3,6}\b"),)),  # no literal: always runs
    Rule("shouted", (re.compile(r"(?i:hush)-\w{8,}"),)),  # a case change inside: only its "-" counts
)
WITH_USER_RULES = Redactor(USER_RULES)


def every_rule(rules: Sequence[Rule], text: str) -> tuple[str, int]:
    """The redactor before the prefilter: every rule in order, over the text and its lower-case twin."""
    if not text:
        return text, 0
    lowered = aligned_lower(text)
    total = 0
    for rule in rules:
        text, lowered, count = rule.redact(text, lowered)
        total += count
    return text, total


SECRETS = [
    "sk-proj-Tq3V9xL2mR8wK4pZ7nB1cY6hJ0sD5fGa",
    "sk-ant-api03-q2W8e4R6t1Y3u5I7o9P0a2S4d6F8g0H1j3K5l7Z9x1C3v5B7n9M1q3W5e7R9t1Y3",
    "AKIAIOSFODNN7EXAMPLE",
    'AWS_SECRET_ACCESS_KEY="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"',
    "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
    "github_pat_11ABCDEFG0123456789abcdefghijklmnopqrstuv",
    "glpat-xYz12AbC34dEf56GhI78jK",
    "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
    "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "Authorization: Bearer 8f14e45fceea167a5a36dedd4bea2543abc",
    "postgres://app:S3cr3t-pa55@db.internal:5432/app",
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n"
    "-----END RSA PRIVATE KEY-----",
    '{"private_key": "-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcw\\n-----END PRIVATE KEY-----"}',
    "mysql -u root --password=hunter2! app",
    '{"password": "correct horse battery"}',
    "client_secret: Zx8kP2qLm9Vt4Rw7Yb3N",
    "API_KEY := 'Zx8kP2qLm9Vt4Rw7Yb3Nq'",
    "EMP-123456",
    "acme_0123456789abcdefABCDEFgh",
    "HUSH-abcdefgh12",
    "ACME-1234",
    "ACME1234",
]
NEAR_MISSES = [
    "sk-",
    "sk-learn",
    "AKIA",
    "A3T",
    "ghp_",
    "github_pat_",
    "xox",
    "eyJ",
    ".eyJ",
    "-----BEGIN",
    "PRIVATE KEY-----",
    "Bearer ",
    "BEARER\t",
    "://",
    "password",
    "PassWord=",
    "token = ",
    "key: ",
    "auth=",
    "[REDACTED:",
    "aut",  # ends where a literal (https://hooks.slack.com/...) may start: overlapping literals
    "ke",
    "privat",
    "s",
    "\\n",
    "\\",
    '"',
    "'",
    "=",
    ":",
    "@",
    "\u212aey = ",  # the Kelvin sign lower-cases to k
    "pa\u017fsword=",  # the long s
    "\u0130",  # lower-cases to two characters: the text's lower case is no longer aligned
    "\u0131",
    "\u03a3",  # the final sigma
    "\ud800",  # a lone surrogate, as JSON can carry
    "é",
    "中文",
]
FRAGMENTS = st.one_of(
    st.sampled_from(SECRETS),
    st.sampled_from(NEAR_MISSES),
    st.text(max_size=12),
    st.text(alphabet="abcdeksyAKIJ0123456789_-=:/ \n'\"\\.", max_size=40),
)
TEXTS = st.lists(FRAGMENTS, max_size=8).map("".join)
TEXTS_AS_JSON = TEXTS.map(lambda text: json.dumps({"command": text}, ensure_ascii=False))  # tool inputs


@pytest.mark.parametrize("redactor", [FULL, REDACTED, WITH_USER_RULES], ids=["full", "redacted", "user_rules"])
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(TEXTS, TEXTS_AS_JSON))
def test_the_prefilter_changes_no_result(redactor: Redactor, text: str) -> None:
    assert redactor.redact(text) == every_rule(redactor.rules, text)


@pytest.mark.parametrize("secret", SECRETS)
def test_each_salted_secret_gives_the_same_result_alone_in_json_and_in_prose(secret: str) -> None:
    for text in (secret, orjson.dumps({"s": secret}).decode(), f"see x{secret}, then {secret.upper()}!"):
        assert WITH_USER_RULES.redact(text) == every_rule(USER_RULES, text)


def test_each_builtin_rule_has_literals_and_every_secret_opens_its_rule() -> None:
    assert all(rule_literals(rule) for rule in BUILTIN_RULES)
    prefilter = Prefilter(BUILTIN_RULES)
    for secret in SECRETS[:17]:
        found = {rule.kind for rule in BUILTIN_RULES if rule.redact(secret, aligned_lower(secret))[2]}
        opened = {BUILTIN_RULES[index].kind for index in prefilter.open(secret)}
        assert found and found <= opened, secret


def test_text_without_a_literal_opens_no_rule() -> None:
    assert Prefilter(BUILTIN_RULES).open("please fix the failing test in the parser") == frozenset()
    assert Prefilter(BUILTIN_RULES).open("def parse(text: str) -> list[int]:\n    return []\n") == frozenset()


def test_the_literals_read_from_patterns() -> None:
    assert necessary_literals(re.compile(r"g(?:h[pousr]_\w+|ithub_pat_\w+)")) == {
        "ghp_",
        "gho_",
        "ghu_",
        "ghs_",
        "ghr_",
        "github_pat_",
    }
    assert necessary_literals(re.compile(r"EMP-\d{6}", re.IGNORECASE)) == {"emp-"}
    assert necessary_literals(re.compile(r"bearer[ \t]+\w+"), lowered=True) == {"bearer ", "bearer\t"}
    assert necessary_literals(re.compile(r"\d{6}-[A-Z]+")) == {"-"}
    assert necessary_literals(re.compile(r"\b[A-Z]{2,5}-?\d+")) is None
    assert necessary_literals(re.compile(r"(?i:hush)-\w+")) == {"-"}
    assert necessary_literals(re.compile(r"x(?:ab)?y")) in ({"xaby", "xy"}, {"x"}, {"y"})
    assert necessary_literals(re.compile(r"É\d+", re.IGNORECASE)) is None  # only ASCII folds like the bytes


def test_a_rule_without_a_literal_always_runs() -> None:
    rules = (Rule("ticket", (re.compile(r"\b[A-Z]{2,5}\d{3,6}\b"),)),)
    assert Prefilter(rules).open("nothing here") == {0}
    assert Redactor(rules).redact("see ACME1234") == ("see [REDACTED:ticket]", 1)


def test_a_lookalike_of_an_ascii_letter_opens_every_case_insensitive_rule() -> None:
    """'\u212a' (Kelvin) lower-cases to k: 'api_\u212aey' is an api_key assignment to the lower-cased rules."""
    text = "api_\u212aey = Zx8kP2qLm9Vt4Rw7Yb3N"
    assert REDACTED.redact(text) == every_rule(REDACTED.rules, text) == ("api_\u212aey = [REDACTED:secret]", 1)


def test_no_other_character_folds_to_ascii() -> None:
    """Why the prefilter may lower only ASCII bytes: no other character than the lookalikes lower-cases to
    ASCII or matches an ASCII character when case is ignored."""
    others = "".join(
        chr(code)
        for code in range(0x80, sys.maxunicode + 1)
        if not 0xD800 <= code <= 0xDFFF and chr(code) not in ASCII_LOOKALIKES
    )
    ascii_letters = re.compile("|".join(re.escape(chr(code)) for code in range(0x80)), re.IGNORECASE)
    assert ascii_letters.search(others) is None
    assert re.search(r"[\x00-\x7f]", "".join(char.lower() for char in others)) is None
    assert all(
        re.fullmatch(letter, lookalike, re.IGNORECASE)
        for lookalike, letter in zip(ASCII_LOOKALIKES, "ksii", strict=True)
    )


def test_after_a_replacement_every_later_rule_runs() -> None:
    """After a replacement every later rule runs over the text as it now stands."""
    text = "ghp_16C7e42F292c6912E7710c838347Ae178B4a password=hunter2!"
    assert REDACTED.redact(text) == every_rule(REDACTED.rules, text)
    assert REDACTED.redact(text)[1] == 2


def test_a_literal_starting_inside_another_is_not_missed() -> None:
    """The search reports matches that do not overlap: 'auth' is found and the webhook's literal, which
    starts at its 'h', is passed over; the rules of such literals are opened with 'auth'."""
    text = "authttps://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"
    assert REDACTED.redact(text) == every_rule(REDACTED.rules, text) == ("aut[REDACTED:slack_webhook]", 1)
