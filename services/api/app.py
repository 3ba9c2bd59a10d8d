"""The query API as a FastAPI app: Coder-compatible paths, bridge-token auth, errors as JSON.

Handlers are sync functions, so FastAPI runs them (and their blocking store queries) in its thread
pool. Every error is ``{"message": ..., "detail"?: ...}``: 400 for bad input (naming the term),
401 without a valid token, 403 outside the caller's visibility, 503 when the store fails.
"""

import logging
import time
from typing import Annotated, Any
from uuid import UUID

import orjson
from clickhouse_connect.driver.exceptions import ClickHouseError
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPBearer
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aibridge import groups, metrics, pricing
from aibridge.api import audit, budget_routes, models, pages, service, sessions
from aibridge.api.audit_sink import AuditSink
from aibridge.api.errors import ApiError, BadRequest, StoreUnavailable, Unauthorized
from aibridge.api.query import Filters, check_range, parse_q, parse_time
from aibridge.api.repository import ClientSource, InterceptionReader
from aibridge.api.settings import ApiSettings
from aibridge.auth import AuthError, Identity, Verifier, token_from_headers
from aibridge.identity import verify

log = logging.getLogger("aibridge.api")

PREFIX = "/api/v2/aibridge"
Q_DESCRIPTION = (
    'Space-separated key:value terms, combined with AND; quote values with spaces (client:"Claude Code"). '
    "Keys: initiator (user id, username or me), provider, model, client, session_id, thread_id (the id of the "
    "interception that started the thread), started_after (inclusive) and started_before (exclusive) as RFC 3339 "
    "times."
)
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": models.ErrorResponse, "description": "Bad input; the message names the offending term."},
    401: {"model": models.ErrorResponse, "description": "No bridge token, or an invalid one."},
    403: {"model": models.ErrorResponse, "description": "Outside what the token's role may see."},
    503: {"model": models.ErrorResponse, "description": "The interception store is unreachable or failed."},
}

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <bridge token>")
_api_key = APIKeyHeader(name="X-Api-Key", auto_error=False, description="The bridge token.")
_session = APIKeyHeader(name="Coder-Session-Token", auto_error=False, description="The bridge token (Coder's header).")


class OrjsonResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def create_api_app(
    settings: ApiSettings, client: Any, verifier: Verifier, audit_sink: AuditSink | None = None
) -> FastAPI:
    """The API app with full paths; ``client`` may be None to connect to the store on first use.
    Access audit records go to ``audit_sink`` (default: the log only)."""
    app = FastAPI(
        title="AI Bridge query API",
        version="2",
        openapi_url=f"{PREFIX}/openapi.json",
        docs_url=f"{PREFIX}/docs",
        redoc_url=None,
        default_response_class=OrjsonResponse,
    )
    app.state.reader = InterceptionReader(ClientSource(settings, client), settings.api_query_timeout)
    app.state.verifier = verifier
    app.state.audit = audit_sink or AuditSink(None, settings.audit_topic)
    app.state.trusted_proxies = settings.trusted_proxies()
    app.state.spend = service.Spend(pricing.load(settings.prices_file), groups.load(settings.groups_file))
    _add_error_handlers(app)
    app.include_router(router)
    app.include_router(
        budget_routes.build_router(authenticate), responses=ERRORS, dependencies=[Depends(single_valued_query)]
    )
    pages.install(app)  # the sessions web pages under /aibridge
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    app.add_middleware(_Metrics)
    return app


async def authenticate(
    request: Request,
    _bearer_token: Annotated[object, Depends(_bearer)],
    _api_key_token: Annotated[object, Depends(_api_key)],
    _session_token: Annotated[object, Depends(_session)],
) -> Identity:
    headers = request.headers
    api_key = headers.get("x-api-key") or headers.get("coder-session-token")
    verifier: Verifier = request.app.state.verifier
    try:
        return await verify(verifier, token_from_headers(headers.get("authorization"), api_key))
    except AuthError as exc:
        raise Unauthorized(str(exc)) from exc


def single_valued_query(request: Request) -> None:
    """Every query parameter is single-valued: a repeated one (``q=a&q=b``) is ambiguous, so it is a 400."""
    keys = [key for key, _ in request.query_params.multi_items()]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise BadRequest(f"query parameter {repeated[0]!r} is given more than once")


def store_reader(request: Request) -> InterceptionReader:
    reader: InterceptionReader = request.app.state.reader
    return reader


Caller = Annotated[Identity, Depends(authenticate)]
Reader = Annotated[InterceptionReader, Depends(store_reader)]
QParam = Annotated[str | None, Query(description=Q_DESCRIPTION, max_length=4096)]
router = APIRouter(prefix=PREFIX, responses=ERRORS, dependencies=[Depends(single_valued_query)])


@router.get("/interceptions", response_model=models.InterceptionsPage)
def list_interceptions(
    *,
    request: Request,
    identity: Caller,
    reader: Reader,
    q: QParam = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size.")] = 100,
    after_id: Annotated[UUID | None, Query(description="Cursor: the last id of the previous page.")] = None,
    offset: Annotated[int | None, Query(ge=0, le=10_000_000, description="Rows to skip.")] = None,
) -> Any:
    """Interceptions newest first (started_at, then id, descending), with their children.

    Returns prompts and tool inputs: every answer to an authenticated caller writes an access audit record."""
    pagination = audit.Pagination(limit, offset, None if after_id is None else str(after_id))
    with audit.access(request, identity, q, pagination) as access:
        page = service.list_interceptions(reader, identity, parse_q(q), limit=limit, offset=offset, after_id=after_id)
        access.rows, access.matched = len(page["results"]), page["count"]
    # Rendered already in the documented shape (tests/api/test_api_schema.py checks answers against it):
    # a Response skips FastAPI's re-validation of up to 1000 interceptions (3-4 ms for a page of 100).
    return OrjsonResponse(page)


@router.get("/sessions", response_model=models.SessionsPage)
def list_sessions(
    *,
    request: Request,
    identity: Caller,
    reader: Reader,
    q: QParam = None,
    limit: Annotated[int, Query(ge=1, le=sessions.MAX_PAGE, description="Page size.")] = 50,
    after_id: Annotated[
        str | None, Query(min_length=1, max_length=256, description="Cursor: the last id of the previous page.")
    ] = None,
    offset: Annotated[int | None, Query(ge=0, le=10_000_000, description="Sessions to skip.")] = None,
) -> Any:
    """Sessions newest activity first (their newest interception's start, then id, descending), with counts
    of threads, interceptions and tokens. ``q`` as for interceptions: a session matches a provider or model
    when one of its interceptions does, and a time range when its span overlaps it.

    Members see their own sessions, auditors and admins everyone's. Audited like /interceptions."""
    pagination = audit.Pagination(limit, offset, after_id)
    with audit.access(request, identity, q, pagination, audit.SESSIONS_LIST) as access:
        criteria = service.resolve(parse_q(q), identity, reader)
        scope = service.visible_initiators(identity)
        page = sessions.list_sessions(
            sessions.SessionReader(reader), criteria, scope, limit=limit, offset=offset, after_id=after_id
        )
        access.rows, access.matched = len(page["results"]), page["count"]
    return OrjsonResponse(page)


@router.get(
    "/sessions/{session_id}",
    response_model=models.SessionDetail,
    responses={404: {"model": models.ErrorResponse, "description": "No such session visible to the caller."}},
)
def get_session(*, request: Request, identity: Caller, reader: Reader, session_id: str) -> Any:
    """One session: its threads in the order they started, each with its prompt, interceptions (with their
    prompts, token usages and tool usages), tool calls, reasoning, tokens and duration.

    A member asking for a session that is not theirs gets a 404, as for one that does not exist."""
    with audit.access(request, identity, None, audit.Pagination(), audit.SESSIONS_SHOW) as access:
        detail = sessions.get_session(sessions.SessionReader(reader), session_id, service.visible_initiators(identity))
        access.rows = access.matched = detail["interceptions"]
    return OrjsonResponse(detail)


@router.get("/models", response_model=list[str])
def list_models(identity: Caller, reader: Reader) -> Any:
    """Distinct models of the interceptions visible to the caller, sorted."""
    return service.facet(reader, identity, "model")


@router.get("/clients", response_model=list[str])
def list_clients(identity: Caller, reader: Reader) -> Any:
    """Distinct clients (Claude Code, Codex, ...) of the interceptions visible to the caller, sorted."""
    return service.facet(reader, identity, "client")


@router.get("/providers", response_model=list[str])
def list_providers(identity: Caller, reader: Reader) -> Any:
    """Distinct providers of the interceptions visible to the caller, sorted."""
    return service.facet(reader, identity, "provider")


@router.get("/usage", response_model=models.UsageSummary)
def usage(
    *,
    request: Request,
    identity: Caller,
    reader: Reader,
    group_by: Annotated[
        str,
        Query(
            max_length=100,
            description="One or more of user, group, model, provider, client, day (UTC), comma-separated.",
        ),
    ] = "user",
    started_after: Annotated[str | None, Query(description="RFC 3339, inclusive.")] = None,
    started_before: Annotated[str | None, Query(description="RFC 3339, exclusive.")] = None,
    unpriced: Annotated[bool, Query(description="Also list the models whose usages have no price.")] = False,
    q: QParam = None,
) -> Any:
    """Interceptions, tokens (cache read and write included) and cost by any of user, group, model,
    provider, client and day.

    Interceptions count by started_at in the window; tokens and cost by the time each usage was recorded.
    A user in several groups counts in each group.
    """
    keys = service.parse_group_by(group_by)
    window = Filters(
        started_after=_time_param("started_after", started_after),
        started_before=_time_param("started_before", started_before),
    )
    filters = parse_q(q).merged(window)
    check_range(filters)
    spend: service.Spend = request.app.state.spend
    return service.usage_report(reader, identity, filters, keys, spend, unpriced=unpriced)


def _time_param(name: str, value: str | None) -> Any:
    return None if value is None else parse_time(value, f"{name}={value}")


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> OrjsonResponse:
        return OrjsonResponse(exc.body(), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> OrjsonResponse:
        return OrjsonResponse(_validation_error(exc).body(), status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> OrjsonResponse:
        """The framework's own refusals (an unknown path, a body that is not JSON) in the API's error shape."""
        return OrjsonResponse({"message": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(ClickHouseError)
    async def store_error(request: Request, exc: ClickHouseError) -> OrjsonResponse:
        log.warning("store error outside a query: %s", type(exc).__name__)
        failure = StoreUnavailable("the interception store is unavailable", type(exc).__name__)
        return OrjsonResponse(failure.body(), status_code=503)


def _validation_error(exc: RequestValidationError) -> BadRequest:
    first = exc.errors()[0] if exc.errors() else {}
    location = [str(part) for part in first.get("loc", ()) if part not in ("query", "header")]
    name = ".".join(location) or "request"
    given = first.get("input")
    shown = f" (got {str(given)[:60]!r})" if isinstance(given, str | int) else ""
    return BadRequest(f"invalid {name}{shown}: {first.get('msg', 'invalid value')}")


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema without its 422 answers: validation errors are 400s here."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        app.openapi_schema = schema
    return app.openapi_schema


class _Metrics:
    """Counts and times every request by its route template (never by raw path)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", "unmatched")
            metrics.API_REQUESTS.labels(endpoint, str(status)).inc()
            metrics.API_REQUEST_SECONDS.labels(endpoint).observe(time.perf_counter() - started)
