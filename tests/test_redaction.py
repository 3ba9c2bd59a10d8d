"""The redaction rules one by one (what they replace, and realistic text they must leave alone), the
capture modes, and the rules file (extending, overriding, turning off, and its errors)."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from pydantic import ValidationError

from aibridge.events import ERROR_LIMIT, InterceptionContext, Status
from aibridge.proxy.settings import ProxySettings
from aibridge.redaction import (
    BUILTIN_RULES,
    CaptureMode,
    CapturePolicy,
    ProviderMessage,
    RuleFileError,
    capture_policy,
    load_rules,
    shannon_entropy,
)

FULL = CapturePolicy.build(CaptureMode.FULL)
REDACTED = CapturePolicy.build(CaptureMode.REDACTED)
METADATA = CapturePolicy.build(CaptureMode.METADATA)

PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEpAIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n"
    "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n"
    "-----END RSA PRIVATE KEY-----"
)
GCP_KEY = json.dumps(
    {
        "type": "service_account",
        "project_id": "acme-prod",
        "private_key_id": "3f2a9c1e4b5d6f708192a3b4c5d6e7f8091a2b3c",
        "private_key": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n"
        "-----END PRIVATE KEY-----\n",
        "client_email": "ci@acme-prod.iam.gserviceaccount.com",
    }
)

# kind -> (text holding the secret, the secret itself)
PRECISE: dict[str, tuple[str, str]] = {
    "openai_key": ("OPENAI_API_KEY=sk-proj-Tq3V9xL2mR8wK4pZ7nB1cY6hJ0sD5fGa", "sk-proj-Tq3V9xL2mR8wK4pZ7nB1cY6"),
    "anthropic_key": (
        "use sk-ant-api03-q2W8e4R6t1Y3u5I7o9P0a2S4d6F8g0H1j3K5l7Z9x1C3v5B7n9M1q3W5e7R9t1Y3 now",
        "sk-ant-api03-q2W8e4R6t1Y3u5I7o9P0a2S4d6F8g0H1j3K5l7Z9x1C3v5B7n9M1q3W5e7R9t1Y3",
    ),
    "aws_access_key": ("aws_access_key_id = AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
    "aws_secret_key": (
        'AWS_SECRET_ACCESS_KEY="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"',
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    ),
    "github_token": ("git clone https://ghp_16C7e42F292c6912E7710c838347Ae178B4a@github.com/acme/x", "ghp_16C7e42F"),
    "gitlab_token": ("PRIVATE-TOKEN: glpat-xYz12AbC34dEf56GhI78jK", "glpat-xYz12AbC34dEf56GhI78jK"),
    "slack_token": ("SLACK_BOT_TOKEN=xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "xoxb-1234567890"),
    "slack_webhook": (
        "curl -X POST https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX -d x",
        "T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
    ),
    "jwt": (
        "token: eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "eyJzdWIiOiIxMjM0NTY3ODkwIn0",
    ),
    "bearer_token": ("curl -H 'Authorization: Bearer 8f14e45fceea167a5a36dedd4bea2543abc'", "8f14e45fceea167a5a36"),
    "url_password": ("DATABASE_URL=postgres://app:S3cr3t-pa55@db.internal:5432/app", "S3cr3t-pa55"),
    "pem_private_key": (f"here is my key:\n{PEM}\nwhy does ssh refuse it?", "MIIEpAIBAAKCAQEAu1SU1LfVLPHCozMxH2"),
    "gcp_service_account_key": (f"my credentials.json: {GCP_KEY}", "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcw"),
}
HEURISTIC: dict[str, tuple[str, str]] = {
    "password": ("mysql -u root --password=hunter2! app", "hunter2!"),
    "secret": ("client_secret: Zx8kP2qLm9Vt4Rw7Yb3N", "Zx8kP2qLm9Vt4Rw7Yb3N"),
}

# Realistic text that holds no secret: nothing may be replaced, in the broadest mode.
ORDINARY = [
    "commit 3f2a9c1e4b5d6f708192a3b4c5d6e7f8091a2b3c fixed the retry loop",
    "request id 123e4567-e89b-12d3-a456-426614174000 failed",
    "def login(password: str) -> Token:\n    password = get_password()\n    return Token(password=None)",
    'token = request.headers["authorization"]\napi_key = os.environ["OPENAI_API_KEY"]',
    "api_key = settings.openai_key.get_secret_value()\nsecret_name = 'prod-db-password'",
    "from sklearn.linear_model import LogisticRegression  # sk-learn, task-scheduler-abcdefghijklmnopqrstuvwxyz0123",
    "the AKIA prefix marks AWS key ids; eyJ starts every base64 JSON object",
    "Authorization: Bearer $TOKEN  and  Bearer <your token here>",
    "cache_key = f'user:{user_id}:profile'\nmax_tokens: 4096\ntoken_count = 1234567890123456",
    "https://github.com/acme/widgets/blob/main/src/client.py#L42 and http://localhost:8080/v1",
    "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----",
]


@pytest.mark.parametrize("kind", PRECISE)
def test_a_precise_rule_replaces_its_secret_in_every_mode_that_keeps_text(kind: str) -> None:
    text, secret = PRECISE[kind]
    for policy in (FULL, REDACTED):
        redacted, count = policy.user_text(text)
        assert secret not in redacted
        assert f"[REDACTED:{kind}]" in redacted
        assert count == 1 or policy is REDACTED  # a service account's private_key_id is a "secret" there too


@pytest.mark.parametrize("kind", HEURISTIC)
def test_a_heuristic_rule_applies_in_redacted_mode_only(kind: str) -> None:
    text, secret = HEURISTIC[kind]
    assert FULL.user_text(text) == (text, 0)
    redacted, count = REDACTED.user_text(text)
    assert (secret not in redacted, f"[REDACTED:{kind}]" in redacted, count) == (True, True, 1)


@pytest.mark.parametrize("kind", [*PRECISE, *HEURISTIC])
def test_secrets_inside_json_text_are_replaced_too(kind: str) -> None:
    """Tool inputs are JSON text: quotes and newlines arrive escaped."""
    text, secret = {**PRECISE, **HEURISTIC}[kind]
    policy = FULL if kind in PRECISE else REDACTED
    as_json = orjson.dumps({"command": text}).decode()
    redacted, count = policy.user_text(as_json)
    assert secret not in redacted and count == 1
    assert orjson.loads(redacted)["command"].count(f"[REDACTED:{kind}]") == 1  # still valid JSON


# The secrets of the rules that must start a word, alone.
WORD_START = {
    "openai_key": "sk-proj-Tq3V9xL2mR8wK4pZ7nB1cY6hJ0sD5fGa",
    "anthropic_key": "sk-ant-api03-q2W8e4R6t1Y3u5I7o9P0a2S4d6F8g0H1j3K5l7Z9x1C3v5B7n9M1q3W5e7R9t1Y3",
    "aws_access_key": "AKIAIOSFODNN7EXAMPLE",
    "github_token": "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
    "gitlab_token": "glpat-xYz12AbC34dEf56GhI78jK",
    "slack_token": "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
}


def test_the_word_start_rules_are_listed() -> None:
    assert {rule.kind for rule in BUILTIN_RULES if rule.word_start} == set(WORD_START)


@pytest.mark.parametrize("kind", WORD_START)
def test_a_secret_that_starts_a_line_of_json_text_is_replaced(kind: str) -> None:
    """After an escaped newline (``\\n``) a secret starts a word, though a letter precedes it."""
    secret = WORD_START[kind]
    assert FULL.user_text(orjson.dumps({"lines": f"first line\n{secret}"}).decode())[1] == 1
    assert FULL.user_text(f"first line x{secret}")[1] == 0  # this one continues a word


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert REDACTED.user_text(text) == (text, 0)


def test_a_name_is_kept_and_only_the_value_replaced() -> None:
    assert REDACTED.user_text('{"password": "correct horse battery"}') == ('{"password": "[REDACTED:password]"}', 1)
    assert REDACTED.user_text("PASSWORD=s3cret!") == ("PASSWORD=[REDACTED:password]", 1)
    redis = ("url: redis://:Tr0ub4dor@cache:6379", "url: redis://:[REDACTED:url_password]@cache:6379")
    assert FULL.user_text(redis[0]) == (redis[1], 1)


def test_every_secret_of_a_text_is_counted() -> None:
    text = "\n".join(text for text, _ in [*PRECISE.values(), *HEURISTIC.values()])
    redacted, count = REDACTED.user_text(text)
    assert count == len(PRECISE) + len(HEURISTIC) + 1  # and the service account's private_key_id
    assert "3f2a9c1e4b5d6f708192a3b4c5d6e7f8091a2b3c" not in redacted
    assert all(secret not in redacted for _, secret in [*PRECISE.values(), *HEURISTIC.values()])
    assert FULL.user_text(text)[1] == len(PRECISE)


def test_a_value_too_regular_for_a_secret_is_kept() -> None:
    assert shannon_entropy("aaaaaaaaaaaaaaaa1") < 3.5
    assert REDACTED.user_text("token = aaaaaaaaaaaaaaaa1") == ("token = aaaaaaaaaaaaaaaa1", 0)
    assert shannon_entropy("Zx8kP2qLm9Vt4Rw7Yb3N") > 3.5


def test_text_whose_lower_case_is_longer_is_still_scanned() -> None:
    """'İ'.lower() has two characters: the case-insensitive rules then run on the text itself."""
    text = "İstanbul office: PASSWORD=s3cret! and Bearer 8f14e45fceea167a5a36dedd4bea2543abc"
    redacted, count = REDACTED.user_text(text)
    assert count == 2 and "s3cret" not in redacted and "8f14e45f" not in redacted


def test_metadata_mode_keeps_no_text_and_still_scrubs_other_text() -> None:
    text, _ = PRECISE["aws_access_key"]
    assert METADATA.user_text(text) == ("", 0)
    assert METADATA.scrub(HEURISTIC["password"][0])[1] == 1  # an error message gets every rule
    assert FULL.scrub(HEURISTIC["password"][0])[1] == 0


OPENAI_REFUSAL = orjson.dumps(
    {
        "error": {
            "message": "Invalid value: 'ACME-1234 password=Hunt3r-Blue-42'. Supported values are: 'user'.",
            "type": "invalid_request_error",
            "param": "messages.[0].role",
            "code": "invalid_value",
        }
    }
)


def test_metadata_mode_keeps_only_the_kind_of_a_providers_message() -> None:
    """A provider's error can quote the request: metadata mode keeps its type and code, no text."""
    message = ProviderMessage.from_body(OPENAI_REFUSAL, 4096)
    assert METADATA.scrub(message) == ("invalid_request_error/invalid_value: [not recorded: capture mode metadata]", 0)
    kept, count = REDACTED.scrub(message)
    assert "ACME-1234" in kept and "Hunt3r" not in kept and count == 1  # other modes: the text, secrets replaced
    own = "the provider could not be reached: ConnectError: refused"  # the proxy's own text quotes no one
    assert METADATA.scrub(own) == (own, 0)


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (b'{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}', "overloaded_error"),
        (
            b'{"error": {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"}}',
            "requests/rate_limit_exceeded",
        ),
        (b'{"error": {"type": "server_error", "code": "server_error"}}', "server_error"),
        (b'{"error": {"type": "a type with spaces: and the prompt", "code": 429}}', "429"),
        (b'{"error": "a bare string quoting the prompt"}', "error"),
        (b"<html>502 Bad Gateway: the prompt</html>", "error"),
        (b'["not", "an object"]', "error"),
        (b'{"error": {"type": true, "code": null}}', "error"),
    ],
)
def test_the_kind_of_a_providers_error_answer(body: bytes, kind: str) -> None:
    message = ProviderMessage.from_body(body, 10)
    assert message.kind == kind and message == body[:10].decode()
    assert METADATA.scrub(message)[0] == f"{kind}: [not recorded: capture mode metadata]"


def test_a_streamed_providers_message_keeps_its_text_and_kind() -> None:
    message = ProviderMessage("overloaded_error: Overloaded", "overloaded_error")
    assert (message, message.kind) == ("overloaded_error: Overloaded", "overloaded_error")
    assert FULL.scrub(message) == ("overloaded_error: Overloaded", 0)


def test_the_builtin_kinds() -> None:
    assert [rule.kind for rule in BUILTIN_RULES] == [
        "gcp_service_account_key",
        "pem_private_key",
        "anthropic_key",
        "openai_key",
        "aws_access_key",
        "aws_secret_key",
        "github_token",
        "gitlab_token",
        "slack_token",
        "slack_webhook",
        "jwt",
        "bearer_token",
        "url_password",
        "password",
        "secret",
    ]
    assert {rule.kind for rule in BUILTIN_RULES if rule.heuristic} == set(HEURISTIC)


# ---- the rules file -----------------------------------------------------------------------------------


def test_a_yaml_file_adds_replaces_and_removes_rules(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "rules:\n"
        "  - kind: acme_token\n"
        "    pattern: 'acme_[A-Za-z0-9]{24}'\n"
        "    word_start: true\n"
        "  - kind: jwt\n"
        "    enabled: false\n"
        "  - kind: password\n"
        "    pattern: '(?<=hunter)(?P<secret>\\d+)'\n"
    )
    rules = load_rules(path)
    kinds = [rule.kind for rule in rules]
    assert "jwt" not in kinds and kinds[-1] == "acme_token" and kinds.index("password") == kinds.index("secret") - 1
    policy = CapturePolicy.build(CaptureMode.FULL, rules)
    jwt_text, _ = PRECISE["jwt"]
    assert policy.user_text(jwt_text) == (jwt_text, 0)
    assert policy.user_text("ci uses acme_0123456789abcdefABCDEFgh") == ("ci uses [REDACTED:acme_token]", 1)
    assert policy.user_text("xacme_0123456789abcdefABCDEFgh")[1] == 0  # word_start
    # the replaced password rule is precise now (heuristic defaults to false), so full mode applies it
    assert policy.user_text("hunter2") == ("hunter[REDACTED:password]", 1)


def test_a_json_file_and_capture_policy(tmp_path: Path) -> None:
    path = tmp_path / "rules.json"
    spec = {"kind": "employee_id", "pattern": "emp-\\d{6}", "ignore_case": True, "heuristic": True}
    path.write_text(json.dumps({"rules": [spec]}))
    assert capture_policy(CaptureMode.FULL, path).user_text("EMP-123456") == ("EMP-123456", 0)
    assert capture_policy(CaptureMode.REDACTED, path).user_text("EMP-123456") == ("[REDACTED:employee_id]", 1)
    assert capture_policy(CaptureMode.FULL, None).redactor.kinds == FULL.redactor.kinds


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("rules:\n  - kind: x\n    pattern: '(unclosed'\n", "rule 1 (x): the pattern does not compile"),
        ("rules:\n  - kind: x\n    pattern: 'a*'\n", "rule 1 (x): the pattern matches empty text"),
        ("rules:\n  - kind: x\n", "rule 1 (x): a pattern is required"),
        ("rules:\n  - kind: x\n    pattern: a\n    gate: a\n", "rules.0.gate: Extra inputs are not permitted"),
        ("rules:\n  - kind: Bad Kind\n    pattern: a\n", "rules.0.kind: String should match pattern"),
        ("rules: [unclosed\n", "not valid YAML"),
        ("- kind: x\n", "not a redaction rules table"),
    ],
)
def test_a_bad_file_is_refused_with_where_and_why(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(content)
    with pytest.raises(RuleFileError, match=r"rules\.yaml") as raised:
        load_rules(path)
    assert message in str(raised.value)


def test_the_proxy_does_not_start_with_a_bad_rules_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ValidationError, match="cannot read the redaction rules"):
        ProxySettings(redaction_rules_file=missing)
    with pytest.raises(ValidationError, match="prompt_capture"):
        ProxySettings(prompt_capture="everything")  # type: ignore[arg-type]


def test_an_error_is_scrubbed_before_it_is_cut() -> None:
    """A secret across the cut would otherwise leave its first half in the event."""
    context = InterceptionContext(
        initiator_id="u1",
        initiator_username="dev",
        provider="openai",
        model="gpt-4o",
        client="Codex",
        streaming=False,
        route="/v1/chat/completions",
        api_key_id="k1",
    )
    secret = WORD_START["github_token"]
    error = "x" * (ERROR_LIMIT - 10) + " " + secret
    ended = context.ended(Status.UPSTREAM_ERROR, 400, error)
    assert secret[:9] not in ended["error"] and len(ended["error"]) == ERROR_LIMIT
    assert (ended["redactions"], ended["capture"]) == (1, "full")


def test_a_metadata_event_keeps_the_kind_of_a_providers_error() -> None:
    context = InterceptionContext(
        initiator_id="u1",
        initiator_username="dev",
        provider="openai",
        model="gpt-4o",
        client="Codex",
        streaming=False,
        route="/v1/chat/completions",
        api_key_id="k1",
        capture=METADATA,
    )
    ended = context.ended(Status.UPSTREAM_ERROR, 400, ProviderMessage.from_body(OPENAI_REFUSAL, 4096))
    assert (ended["error"], ended["http_status"], ended["redactions"]) == (
        "invalid_request_error/invalid_value: [not recorded: capture mode metadata]",
        400,
        0,
    )
