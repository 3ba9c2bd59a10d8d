"""Secret redaction and the prompt capture policy: what of a prompt or a tool input may leave the proxy.

A :class:`Rule` names a kind of secret and the patterns that find it. A match is replaced by
``[REDACTED:<kind>]``; when a pattern has a group named ``secret`` (or ``secret_<anything>``), only the
group that took part is, so ``password=[REDACTED:password]`` keeps the name. ``min_entropy`` (Shannon,
bits per character) rejects values too regular to be a secret; ``word_start`` rejects a match that
continues a word (``task-...`` is not an OpenAI key).

Rules are *precise* (a secret's own shape: provider, cloud and forge tokens, JWTs, private keys) or
*heuristic* (an assignment to a secret-like name). :class:`CaptureMode` decides which apply:

- ``full``: prompts and tool inputs are kept, precise rules replace the secrets in them;
- ``redacted``: heuristic rules apply as well;
- ``metadata``: no prompt text and no tool input is kept at all; of a provider's error message
  (:class:`ProviderMessage`, which can quote the request) only its type and code; other texts (the
  proxy's own errors) get every rule.

:data:`BUILTIN_RULES` is the table; a YAML or JSON file (:func:`load_rules`) adds rules, replaces a rule
of the same kind, or turns one off. Everything here is pure and compiled once.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aibridge.redaction_prefilter import Prefilter

_MARKER: Final = "[REDACTED:"


class CaptureMode(StrEnum):
    FULL = "full"
    REDACTED = "redacted"
    METADATA = "metadata"


class RuleFileError(ValueError):
    """A redaction rules file cannot be read or is not a valid table; the message says where and why."""


def shannon_entropy(text: str) -> float:
    """Bits per character of ``text``'s own character distribution (0 for empty text)."""
    if not text:
        return 0.0
    size = len(text)
    return -sum(count / size * math.log2(count / size) for count in Counter(text).values())


@dataclass(frozen=True, slots=True)
class Rule:
    """One kind of secret and the patterns that find it (tried one after the other)."""

    kind: str
    patterns: tuple[re.Pattern[str], ...]
    lowered: bool = False
    heuristic: bool = False
    min_entropy: float = 0.0
    word_start: bool = False
    _ignore_case: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ignore_case = tuple(re.compile(p.pattern, p.flags | re.IGNORECASE) for p in self.patterns)
        object.__setattr__(self, "_ignore_case", ignore_case if self.lowered else ())

    @property
    def marker(self) -> str:
        return f"{_MARKER}{self.kind}]"

    def redact(self, text: str, lowered: str | None) -> tuple[str, str | None, int]:
        """``text`` with every match replaced, its lower-case twin kept in step, and how many were replaced.
        ``lowered`` is ``text.lower()`` when that has the same length (its spans are the text's), else None."""
        total = 0
        for index, pattern in enumerate(self.patterns):
            if not self.lowered:
                spans = self._secrets(pattern, text, text)
            elif lowered is not None:
                spans = self._secrets(pattern, lowered, text)
            else:
                spans = self._secrets(self._ignore_case[index], text, text)
            if spans:
                text = _splice(text, spans, self.marker)
                lowered = None if lowered is None else _splice(lowered, spans, self.marker.lower())
                total += len(spans)
        return text, lowered, total

    def _secrets(self, pattern: re.Pattern[str], subject: str, text: str) -> list[tuple[int, int]]:
        """The spans of ``text`` to replace: where ``pattern`` matches ``subject`` (the text or its lower case)."""
        spans = []
        for match in pattern.finditer(subject):
            start, end = _secret_span(match)
            if self.word_start and _continues_word(text, match.start()):
                continue
            if self.min_entropy and shannon_entropy(text[start:end]) < self.min_entropy:
                continue
            if _MARKER in text[start:end]:  # already replaced by an earlier rule
                continue
            spans.append((start, end))
        return spans


def _splice(text: str, spans: list[tuple[int, int]], marker: str) -> str:
    pieces: list[str] = []
    last = 0
    for start, end in spans:
        pieces += (text[last:start], marker)
        last = end
    pieces.append(text[last:])
    return "".join(pieces)


def _continues_word(text: str, start: int) -> bool:
    """Whether a letter or digit precedes ``start`` (an escape like JSON's ``\\n`` does not count)."""
    if not start or not text[start - 1].isalnum():
        return False
    return not (start >= 2 and text[start - 2] == "\\" and text[start - 1] in "nrtbf")


def _secret_span(match: re.Match[str]) -> tuple[int, int]:
    """The span of the ``secret``/``secret_*`` group that took part, else the whole match's."""
    for name, index in match.re.groupindex.items():
        if (name == "secret" or name.startswith("secret_")) and match.start(index) != -1:
            return match.span(index)
    return match.span()


def aligned_lower(text: str) -> str | None:
    """``text.lower()`` when its positions are the text's (almost always; not for a few letters like 'İ')."""
    lowered = text.lower()
    return lowered if len(lowered) == len(text) else None


def _rule(
    kind: str,
    *patterns: str,
    lowered: bool = False,
    heuristic: bool = False,
    min_entropy: float = 0.0,
    word_start: bool = False,
) -> Rule:
    compiled = tuple(re.compile(pattern) for pattern in patterns)
    return Rule(kind, compiled, lowered, heuristic, min_entropy, word_start)


# Every pattern starts with a literal, so that the regular expression engine finds its candidates with a
# fast substring search: that keeps text without secrets cheap (bench/redaction.py). Case-insensitive
# rules are written in lower case and run on the lower-cased text, for the same reason.
_QUOTE = r"""\\?["']"""  # a quote, JSON-escaped or not (tool inputs are JSON text)
_ASSIGN = rf"""(?:{_QUOTE})?[ \t]*(?:=>|:=|[:=])[ \t]*(?:{_QUOTE})?"""
_VALUE = r"[\w+/.~=\-]"
_SECRET_NAMES = ("secret", "token", "key", "auth", "credential")  # api_key, client_secret, ... contain one
_SECRET_VALUE = rf"(?P<secret>(?={_VALUE}*\d)(?={_VALUE}*[a-z]){_VALUE}{{16,256}}+)(?!{_VALUE})"

BUILTIN_RULES: Final[tuple[Rule, ...]] = (
    _rule(
        "gcp_service_account_key",
        rf"private_key{_QUOTE}[ \t]*:[ \t]*{_QUOTE}(?P<secret>-----BEGIN[^\"]*?){_QUOTE}",
    ),
    _rule(
        "pem_private_key",
        r"-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----"
        r"(?:[\s\S]{0,16384}?-----END[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----|(?:\\[nr]|[A-Za-z0-9+/=\s:,\-])*)",
    ),
    _rule(
        "anthropic_key",
        r"sk-ant-[a-z]{2,10}\d{0,3}-[\w\-]{20,}",
        word_start=True,
    ),
    _rule(
        "openai_key",
        r"sk-(?:(?:proj|svcacct|admin|None)-[\w\-]{20,}|[A-Za-z0-9]{32,})",
        word_start=True,
    ),
    _rule("aws_access_key", r"(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}(?![A-Z0-9])", word_start=True),
    _rule(
        "aws_secret_key",
        rf"aws[\w.\-]{{0,30}}?(?:secret|private)[\w.\-]{{0,30}}?{_ASSIGN}(?P<secret>[a-z0-9/+]{{40}})(?![a-z0-9/+])",
        lowered=True,
    ),
    _rule("github_token", r"g(?:h[pousr]_[A-Za-z0-9]{36,255}|ithub_pat_\w{22,255})", word_start=True),
    _rule("gitlab_token", r"gl(?:pat|dt|ptt|rt|cbt|soat|ffct|oas|imt|agent)-[\w\-]{20,}", word_start=True),
    _rule("slack_token", r"x(?:ox[abposre]|app-\d)-[A-Za-z0-9\-]{10,}", word_start=True),
    _rule("slack_webhook", r"https://hooks\.slack\.com/(?:services|workflows|triggers)/[\w/\-]{20,}"),
    _rule("jwt", r"eyJ[\w\-]{10,}\.eyJ[\w\-]{10,}\.[\w\-]*", word_start=True),
    _rule("bearer_token", r"bearer[ \t]+(?P<secret>(?=[\w.~+/\-]*\d)[\w.~+/\-]{20,}=*)", lowered=True),
    _rule("url_password", r"://[^\s:@/\"'<>\[\]]{0,64}:(?P<secret>[^\s@/\"'<>\[\]]{1,128})@"),
    _rule(
        "password",
        rf"(?:pass(?:word|wd|phrase)|pwd)\w{{0,30}}+{_ASSIGN}"
        r"(?:(?<=[\"'])(?P<secret>(?:[^\"'\n\\]|\\(?![\"'])){1,200}?)(?=\\?[\"'])"
        r"|(?<![\"'])(?P<secret_bare>(?=[^\s\"'`,;]*[\d!@#%^&*+?~])[^\s\"'`,;()\[\]{}<>]{4,200}))",
        lowered=True,
        heuristic=True,
    ),
    _rule(
        "secret",
        *(rf"{name}[\w.\-]{{0,30}}+{_ASSIGN}{_SECRET_VALUE}" for name in _SECRET_NAMES),
        lowered=True,
        heuristic=True,
        min_entropy=3.5,
    ),
)


class Redactor:
    """Applies ``rules`` in order to a text; compiled once, shared by every request.

    A rule runs only when its :class:`Prefilter` literals are in the text; once one has replaced a secret,
    every later rule runs, as before. The result is that of running every rule, at the cost of one pass
    when the text holds no secret.
    """

    __slots__ = ("_prefilter", "rules")

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = tuple(rules)
        self._prefilter = Prefilter(self.rules)

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(rule.kind for rule in self.rules)

    def redact(self, text: str) -> tuple[str, int]:
        """``text`` with every secret the rules recognise replaced by its marker, and how many were."""
        if not text:
            return text, 0
        opened = self._prefilter.open(text)
        if not opened:
            return text, 0
        lowered = aligned_lower(text)
        total = 0
        for index, rule in enumerate(self.rules):
            if total or index in opened:  # the prefilter spoke of the text before any replacement
                text, lowered, count = rule.redact(text, lowered)
                total += count
        return text, total


@dataclass(frozen=True, slots=True)
class CapturePolicy:
    """What of a prompt or tool input an event may carry (the mode), and the rules that scrub it."""

    mode: CaptureMode
    redactor: Redactor = field(compare=False)

    @classmethod
    def build(cls, mode: CaptureMode, rules: Sequence[Rule] = BUILTIN_RULES) -> CapturePolicy:
        """The policy of ``mode`` over ``rules``: heuristic rules apply except in ``full``."""
        chosen = [rule for rule in rules if mode is not CaptureMode.FULL or not rule.heuristic]
        return cls(mode, Redactor(chosen))

    def user_text(self, text: str) -> tuple[str, int]:
        """A prompt or tool input as it may leave the proxy: empty in ``metadata`` mode, else scrubbed."""
        if self.mode is CaptureMode.METADATA:
            return "", 0
        return self.redactor.redact(text)

    def scrub(self, text: str) -> tuple[str, int]:
        """Any other text that may quote the user (an error message): secrets replaced, in every mode; in
        ``metadata`` mode a :class:`ProviderMessage` is its kind alone (the provider may quote the request)."""
        if self.mode is CaptureMode.METADATA and isinstance(text, ProviderMessage):
            return f"{text.kind}: {NOT_CAPTURED}", 0
        return self.redactor.redact(text)


DEFAULT_POLICY: Final = CapturePolicy.build(CaptureMode.FULL)


# ---- a provider's error messages --------------------------------------------------------------------

NOT_CAPTURED: Final = "[not recorded: capture mode metadata]"
_KIND_PART = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


class ProviderMessage(str):
    """An error message the provider wrote, which can quote the request (OpenAI names a value it refuses).

    The text is what is recorded in ``full`` and ``redacted`` mode (secrets replaced); ``kind`` (the error's
    type and code, ``invalid_request_error/invalid_value``) is all ``metadata`` mode records of it.
    """

    kind: str

    def __new__(cls, text: str, error_type: object = None, code: object = None) -> ProviderMessage:
        message = super().__new__(cls, text)
        message.kind = error_kind(error_type, code)
        return message

    @classmethod
    def from_body(cls, body: bytes, limit: int) -> ProviderMessage:
        """A provider's error answer: its first ``limit`` bytes as text, the kind from its JSON error object
        (OpenAI's ``{"error": {"type", "code"}}``, Anthropic's ``{"type": "error", "error": {"type"}}``)."""
        error_type, code = _body_kind(body)
        return cls(body[:limit].decode("utf-8", "replace"), error_type, code)


def error_kind(error_type: object, code: object) -> str:
    """``type/code`` of an error, each part kept only if it reads as an identifier; ``error`` if none does."""
    parts = [str(part) for part in (error_type, code) if isinstance(part, str | int) and not isinstance(part, bool)]
    kept = [part for part in dict.fromkeys(parts) if _KIND_PART.fullmatch(part)]
    return "/".join(kept) or "error"


def _body_kind(body: bytes) -> tuple[object, object]:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(document, dict):
        return None, None
    error = document.get("error")
    if isinstance(error, dict):
        return error.get("type"), error.get("code")
    return None, document.get("code")


# ---- the rules file ----------------------------------------------------------------------------------


class _RuleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    pattern: str | None = None
    ignore_case: bool = False
    heuristic: bool = False
    min_entropy: float = Field(default=0.0, ge=0, le=16)
    word_start: bool = False
    enabled: bool = True


class _RulesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: list[_RuleSpec]


def load_rules(path: Path, base: Sequence[Rule] = BUILTIN_RULES) -> tuple[Rule, ...]:
    """``base`` extended by the rules in ``path`` (YAML or JSON): a rule of a kind already in ``base``
    replaces it in place, ``enabled: false`` removes it, new kinds go last. Raises :class:`RuleFileError`."""
    table = _read_table(path)
    rules = {rule.kind: rule for rule in base}
    for number, spec in enumerate(table.rules, 1):
        where = f"{path}: rule {number} ({spec.kind})"
        if not spec.enabled:
            rules.pop(spec.kind, None)
            continue
        rules[spec.kind] = _compile(spec, where)
    return tuple(rules.values())


def _read_table(path: Path) -> _RulesFile:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RuleFileError(f"{path}: cannot read the redaction rules: {exc}") from exc
    loaded = _parse(path, text)
    try:
        return _RulesFile.model_validate(loaded)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        raise RuleFileError(f"{path}: not a redaction rules table ({{'rules': [...]}}): {problems}") from exc


def _parse(path: Path, text: str) -> Any:
    if path.suffix.lower() == ".json":
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise RuleFileError(f"{path}: not valid JSON: {exc}") from exc
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RuleFileError(f"{path}: not valid YAML: {exc}") from exc


def _compile(spec: _RuleSpec, where: str) -> Rule:
    if spec.pattern is None:
        raise RuleFileError(f"{where}: a pattern is required (or enabled: false to turn the rule off)")
    try:
        pattern = re.compile(spec.pattern, re.IGNORECASE if spec.ignore_case else 0)
    except re.error as exc:
        raise RuleFileError(f"{where}: the pattern does not compile: {exc}") from exc
    if pattern.fullmatch(""):
        raise RuleFileError(f"{where}: the pattern matches empty text")
    return Rule(spec.kind, (pattern,), False, spec.heuristic, spec.min_entropy, spec.word_start)


def capture_policy(mode: CaptureMode, rules_file: Path | None) -> CapturePolicy:
    """The proxy's policy from its settings (the rules file, when given, read once here)."""
    return CapturePolicy.build(mode, BUILTIN_RULES if rules_file is None else load_rules(rules_file))
