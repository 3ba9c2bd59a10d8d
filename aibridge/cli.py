"""The ``aibridge`` command: starts any component and manages tokens and exports."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from aibridge import __version__
from aibridge.auth import Role, generate_keypair, issue_token, load_private_key
from aibridge.durations import parse_duration

Handler = Callable[[argparse.Namespace], int]


def _token_keygen(args: argparse.Namespace) -> int:
    private_path, public_path = generate_keypair(Path(args.out))
    print(f"private key (keep secret, for 'aibridge token issue'): {private_path}")
    print(f"public key (AIBRIDGE_AUTH_PUBLIC_KEY_FILE for every service): {public_path}")
    return 0


def _token_issue(args: argparse.Namespace) -> int:
    from aibridge.settings import TokenSettings

    key_file = args.key or TokenSettings().auth_private_key_file
    if key_file is None:
        print("error: set AIBRIDGE_AUTH_PRIVATE_KEY_FILE or pass --key", file=sys.stderr)
        return 2
    token = issue_token(
        load_private_key(Path(key_file)),
        args.user,
        user_id=args.user_id,
        role=Role(args.role),
        ttl_seconds=parse_duration(args.ttl),
    )
    print(token)
    return 0


def _lazy(module: str, function: str = "main") -> Handler:
    def handler(args: argparse.Namespace) -> int:
        import importlib

        result: int = getattr(importlib.import_module(module), function)(args)
        return result

    return handler


def _add_listen(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument("--listen", default=None, metavar="HOST:PORT", help=f"address to listen on (default {default})")


def _add_token_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    token = commands.add_parser("token", help="create signing keys and issue bridge tokens")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    keygen = token_commands.add_parser("keygen", help="write a new Ed25519 signing key pair")
    keygen.add_argument("--out", required=True, help="directory for the key pair")
    keygen.set_defaults(handler=_token_keygen)
    issue = token_commands.add_parser("issue", help="print a signed bridge token for a user")
    issue.add_argument("--user", required=True, help="username")
    issue.add_argument("--user-id", default=None, help="user id (default: derived from the username)")
    issue.add_argument("--role", choices=[role.value for role in Role], default=Role.MEMBER.value)
    issue.add_argument("--ttl", default="90d", help="lifetime, e.g. 90d, 12h (default 90d)")
    issue.add_argument("--key", default=None, help="private key file (default AIBRIDGE_AUTH_PRIVATE_KEY_FILE)")
    issue.set_defaults(handler=_token_issue)


def _add_login_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    login = commands.add_parser("login", help="sign in at your identity provider and print the client exports")
    login.add_argument("--issuer", help="identity provider issuer URL (default AIBRIDGE_OIDC_ISSUER)")
    login.add_argument("--client-id", help="public client id for the device flow (default AIBRIDGE_OIDC_CLIENT_ID)")
    login.add_argument("--url", help="the bridge's base URL for the exports (default AIBRIDGE_URL)")
    login.add_argument("--token-file", help="where the token set is kept (default AIBRIDGE_OIDC_TOKEN_FILE)")
    login.add_argument(
        "--send", choices=["id_token", "access_token"], default="id_token", help="token sent to the bridge"
    )
    login.add_argument("--refresh", action="store_true", help="refresh the saved token even if still valid")
    login.add_argument("--print-token", action="store_true", help="print only the token (for apiKeyHelper)")
    login.set_defaults(handler=_lazy("aibridge.login", "main"))


def _add_service_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    proxy = commands.add_parser("proxy", help="run the proxy (publishes events to Kafka)")
    _add_listen(proxy, "0.0.0.0:8080")
    proxy.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="processes sharing the port (default AIBRIDGE_WORKERS, else the CPU limit or the host's cores)",
    )
    proxy.set_defaults(handler=_lazy("aibridge.runner", "run_proxy"))
    recorder = commands.add_parser("recorder", help="run the recorder (Kafka -> ClickHouse)")
    _add_listen(recorder, "0.0.0.0:8082, health and metrics")
    recorder.set_defaults(handler=_lazy("aibridge.runner", "run_recorder"))
    api = commands.add_parser("api", help="run the query API")
    _add_listen(api, "0.0.0.0:8081")
    api.set_defaults(handler=_lazy("aibridge.runner", "run_api"))
    up = commands.add_parser("up", help="run the embedded all-in-one bridge")
    _add_listen(up, "127.0.0.1:8080")
    up.add_argument("--data-dir", default=None, help="where keys and the embedded store live (default ./.aibridge)")
    up.add_argument("--components", default=None, help="any of proxy,recorder,api (default: all three)")
    up.add_argument("--bus", choices=["inprocess", "kafka"], default=None, help="event bus (default inprocess)")
    up.add_argument("--simulate-upstream", action="store_true", help="answer with the built-in simulated provider")
    up.set_defaults(handler=_lazy("aibridge.runner", "run_up"))
    for parser in (proxy, recorder, api, up):
        parser.add_argument("--trace", action="store_true", default=None, help="export OpenTelemetry traces")
        parser.add_argument("--trace-logs", action="store_true", default=None, help="attach logs to spans")


def _add_api_options(parser: argparse.ArgumentParser) -> None:
    """Where the commands that read through the API find it, and with which token."""
    parser.add_argument("--url", help="API base URL (default AIBRIDGE_URL)")
    parser.add_argument("--token", help="bridge token (default AIBRIDGE_TOKEN)")


def _add_export_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    interceptions = commands.add_parser("interceptions", help="list recorded interceptions")
    sub = interceptions.add_subparsers(dest="interceptions_command", required=True)
    listing = sub.add_parser("list", help="list interceptions as JSON (or jsonl, csv, table)")
    listing.add_argument("--initiator", help="user id, username, or 'me'")
    listing.add_argument("--provider")
    listing.add_argument("--model")
    listing.add_argument("--client")
    listing.add_argument("--started-after", help="RFC 3339 time")
    listing.add_argument("--started-before", help="RFC 3339 time")
    listing.add_argument("--limit", type=int, default=100, help="page size, 1 to 1000 (default 100)")
    listing.add_argument("--after-id", help="the id of the last result of the previous page")
    listing.add_argument("--all", action="store_true", help="page through every matching interception")
    listing.add_argument("--output", "-o", choices=["json", "jsonl", "csv", "table"], default="json")
    _add_api_options(listing)
    listing.set_defaults(handler=_lazy("aibridge.api.export", "main"))


def _add_usage_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    usage = commands.add_parser("usage", help="cost and tokens by user, group, model, provider, client or day")
    usage.add_argument(
        "--group-by", default="user", help="comma-separated: user, group, model, provider, client, day (default user)"
    )
    usage.add_argument("--since", "--started-after", dest="since", help="RFC 3339 time (inclusive)")
    usage.add_argument("--until", "--started-before", dest="until", help="RFC 3339 time (exclusive)")
    usage.add_argument("--initiator", help="user id, username, or 'me'")
    usage.add_argument("--provider")
    usage.add_argument("--model")
    usage.add_argument("--client")
    usage.add_argument("--unpriced", action="store_true", help="list the models whose usages have no price")
    usage.add_argument("--output", "-o", choices=["table", "csv", "json"], default="table")
    _add_api_options(usage)
    usage.set_defaults(handler=_lazy("aibridge.api.usage_report", "main"))


def _add_budget_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    budgets = commands.add_parser("budgets", help="set, list and remove spending budgets (USD per day or month)")
    sub = budgets.add_subparsers(dest="budgets_command", required=True)
    setting = sub.add_parser("set", help="set the budget of a user or group for a period (admins)")
    removing = sub.add_parser("rm", help="remove the budget of a user or group for a period (admins)")
    for parser in (setting, removing):
        whose = parser.add_mutually_exclusive_group(required=True)
        whose.add_argument("--user", help="a user id or username")
        whose.add_argument("--group", help="a group (from AIBRIDGE_GROUPS_FILE or the identity provider)")
        parser.add_argument("--period", choices=["day", "month"], default="month", help="calendar period in UTC")
    setting.add_argument("--limit", required=True, help="USD per period, e.g. 100.00")
    setting.add_argument("--warn", default="0.8", help="share of the limit that warns (default 0.8)")
    listing = sub.add_parser("list", help="list every budget (admins, auditors), or --mine")
    listing.add_argument("--mine", action="store_true", help="the budgets that apply to you and what you spent")
    listing.add_argument("--output", "-o", choices=["table", "json"], default="table")
    for parser in (setting, removing, listing):
        _add_api_options(parser)
        parser.set_defaults(handler=_lazy("aibridge.api.budget_cli", "main"))


def _add_sessions_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sessions = commands.add_parser("sessions", help="list sessions and show one with its threads")
    sub = sessions.add_subparsers(dest="sessions_command", required=True)
    listing = sub.add_parser("list", help="sessions, newest activity first, as JSON (or jsonl, csv, table)")
    listing.add_argument("--initiator", help="user id, username, or 'me'")
    listing.add_argument("--provider")
    listing.add_argument("--model")
    listing.add_argument("--client")
    listing.add_argument("--started-after", help="RFC 3339 time")
    listing.add_argument("--started-before", help="RFC 3339 time")
    listing.add_argument("--limit", type=int, default=50, help="page size, 1 to 200 (default 50)")
    listing.add_argument("--after-id", help="the id of the last session of the previous page")
    listing.add_argument("--all", action="store_true", help="page through every matching session")
    show = sub.add_parser("show", help="one session: its threads and their interceptions")
    show.add_argument("id", help="the session id")
    for parser in (listing, show):
        parser.add_argument("--output", "-o", choices=["json", "jsonl", "csv", "table"], default="json")
        _add_api_options(parser)
        parser.set_defaults(handler=_lazy("aibridge.api.session_report", "main"))


def _add_dlq_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dlq = commands.add_parser("dlq", help="list and replay the recorder's dead letters (Kafka)")
    sub = dlq.add_subparsers(dest="dlq_command", required=True)
    listing = sub.add_parser("list", help="one JSON line per dead letter: where, when, why, which ids")
    listing.add_argument("--since", help="only letters dead-lettered at or after this RFC 3339 time")
    listing.add_argument("--until", help="only letters dead-lettered before this RFC 3339 time")
    replay = sub.add_parser("replay", help="send the letters not yet replayed back to the events topic")
    replay.add_argument("--group", default="aibridge-dlq-replay", help="consumer group remembering what was replayed")
    replay.add_argument("--dry-run", action="store_true", help="list what would be replayed; send and commit nothing")
    for parser in (listing, replay):
        parser.add_argument("--topic", help="events topic; its letters are in AIBRIDGE_DLQ_TOPIC or <topic>.dlq")
        parser.add_argument("--max", type=int, default=None, help="at most this many letters")
        parser.set_defaults(handler=_lazy("aibridge.recorder.dlq", "main"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aibridge", description=__doc__)
    parser.add_argument("--version", action="version", version=f"aibridge {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_service_commands(commands)
    _add_token_commands(commands)
    _add_export_commands(commands)
    _add_usage_command(commands)
    _add_sessions_commands(commands)
    _add_budget_commands(commands)
    _add_dlq_commands(commands)
    _add_login_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
