"""The sessions web pages: server-rendered HTML under ``/aibridge`` on the API service.

``/aibridge/sessions`` lists sessions with filters, ``/aibridge/sessions/{id}`` shows one session's
threads as timelines (see :mod:`aibridge.api.timeline`). They read through the same functions as the
JSON routes (``GET /api/v2/aibridge/sessions``), with the same visibility (a member sees only their own
sessions; another person's is not found), and each page read writes an access audit record
(``sessions.page``, ``session.page``) as reading prompts through the API does. A person signs in by
pasting a token (:mod:`aibridge.api.signin`). Templates autoescape everything: prompts and tool inputs
are user text.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any, Final
from urllib.parse import parse_qs, quote, urlencode

import jinja2
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from aibridge.api import audit, service, signin, timeline
from aibridge.api.errors import ApiError, BadRequest
from aibridge.api.query import TEXT_KEYS, TIME_KEYS, parse_q
from aibridge.api.repository import InterceptionReader
from aibridge.api.sessions import SessionReader, get_session, list_sessions
from aibridge.auth import AuthError, Identity

log = logging.getLogger("aibridge.api")

PAGES: Final = signin.PATH
LIST_PAGE: Final = f"{PAGES}/sessions"
LOGIN_PAGE: Final = f"{PAGES}/login"
SESSIONS_PAGE: Final = "sessions.page"
SESSION_PAGE: Final = "session.page"
PAGE_SIZE: Final = 50
FILTER_KEYS: Final = (*TEXT_KEYS, *TIME_KEYS)
MAX_FORM_BYTES: Final = 64 * 1024
_HERE = Path(__file__).parent

templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(_HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
templates.filters.update(
    when=timeline.when, tokens=timeline.tokens, duration=timeline.duration, usage=timeline.usage_line
)
templates.globals.update(steps=timeline.steps, quote=lambda text: quote(text, safe=""))


class SignInRequired(Exception):
    """A page was asked for without a valid sign-in; the person is sent to the sign-in form."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def install(app: FastAPI) -> None:
    """Add the pages, their static files and the redirect to the sign-in form to the API's app."""
    app.include_router(router)
    app.mount(f"{PAGES}/static", StaticFiles(directory=_HERE / "static"), name="aibridge-static")

    @app.exception_handler(SignInRequired)
    async def sign_in_first(request: Request, exc: SignInRequired) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"{LOGIN_PAGE}?{urlencode({'next': target})}", status_code=303)


async def signed_in(request: Request) -> Identity:
    try:
        return await signin.identify(request)
    except AuthError as exc:
        raise SignInRequired(str(exc)) from exc


Person = Annotated[Identity, Depends(signed_in)]
router = APIRouter(prefix=PAGES, include_in_schema=False, default_response_class=HTMLResponse)


def render(name: str, code: int = 200, **context: Any) -> HTMLResponse:
    page = HTMLResponse(templates.get_template(name).render(**context), status_code=code)
    page.headers["Cache-Control"] = "no-store"
    page.headers["X-Content-Type-Options"] = "nosniff"
    page.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    )
    page.headers["Referrer-Policy"] = "same-origin"
    return page


@router.get("")
def home() -> RedirectResponse:
    return RedirectResponse(LIST_PAGE, status_code=303)


@router.get("/login")
def login_form(next: Annotated[str | None, Query(max_length=2048)] = None) -> HTMLResponse:
    return render("login.html", next=signin.safe_next(next, LIST_PAGE), error=None, identity=None)


@router.post("/login")
async def login(request: Request) -> Response:
    form = await _form(request)
    target = signin.safe_next(form.get("next"), LIST_PAGE)
    try:
        signin.check_origin(request)
        identity = await signin.check(request, form.get("token", ""))
    except signin.ForeignOrigin as exc:
        return render("login.html", 403, next=target, error=str(exc), identity=None)
    except AuthError as exc:
        return render("login.html", 401, next=target, error=f"Not signed in: {exc}", identity=None)
    response = RedirectResponse(target, status_code=303)
    signin.remember(response, request, form.get("token", ""), identity)
    log.info("signed in to the pages: user=%s role=%s", identity.username, identity.role.value)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    try:
        signin.check_origin(request)
    except signin.ForeignOrigin as exc:
        return render("error.html", 403, status=403, message=str(exc), identity=None)
    response = RedirectResponse(LOGIN_PAGE, status_code=303)
    signin.forget(response, request)
    return response


@router.get("/sessions")
def sessions_page(
    *,
    request: Request,
    identity: Person,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    initiator: Annotated[str, Query(max_length=256)] = "",
    client: Annotated[str, Query(max_length=256)] = "",
    provider: Annotated[str, Query(max_length=256)] = "",
    model: Annotated[str, Query(max_length=256)] = "",
    started_after: Annotated[str, Query(max_length=64)] = "",
    started_before: Annotated[str, Query(max_length=64)] = "",
) -> HTMLResponse:
    """The sessions visible to the person, newest activity first, ``PAGE_SIZE`` a page."""
    asked = {
        "initiator": initiator,
        "client": client,
        "provider": provider,
        "model": model,
        "started_after": started_after,
        "started_before": started_before,
    }
    q = as_q(asked)
    reader: InterceptionReader = request.app.state.reader
    pagination = audit.Pagination(PAGE_SIZE, offset, None)
    context: dict[str, Any] = {"identity": identity, "filters": asked, "offset": offset, "size": PAGE_SIZE}
    try:
        with audit.access(request, identity, q, pagination, action=SESSIONS_PAGE) as access:
            criteria = service.resolve(parse_q(q), identity, reader)
            scope = service.visible_initiators(identity)
            page = list_sessions(SessionReader(reader), criteria, scope, limit=PAGE_SIZE, offset=offset, after_id=None)
            access.rows, access.matched = len(page["results"]), page["count"]
    except ApiError as exc:
        return render("sessions.html", exc.status_code, error=exc.message, page=None, **context)
    return render("sessions.html", page=page, error=None, links=_pages(asked, offset, page["count"]), **context)


@router.get("/sessions/{session_id}")
def session_page(*, request: Request, identity: Person, session_id: str) -> HTMLResponse:
    """One session's threads as timelines; another person's session is not found for a member."""
    reader: InterceptionReader = request.app.state.reader
    try:
        with audit.access(request, identity, None, audit.Pagination(), action=SESSION_PAGE) as access:
            detail = get_session(SessionReader(reader), session_id, service.visible_initiators(identity))
            access.rows, access.matched = detail["interceptions"], 1
    except ApiError as exc:
        return render("error.html", exc.status_code, status=exc.status_code, message=exc.message, identity=identity)
    return render("session.html", session=detail, identity=identity)


def as_q(filters: dict[str, str]) -> str | None:
    """The page's filter fields as the API's ``q`` text (values quoted), so both parse alike."""
    terms = []
    for key in FILTER_KEYS:
        value = filters.get(key, "").strip()
        if value:
            escaped = value.replace("\\", "\\\\").replace('"', '\\"')
            terms.append(f'{key}:"{escaped}"')
    return " ".join(terms) or None


def _pages(filters: dict[str, str], offset: int, count: int) -> dict[str, str | None]:
    kept = {key: value for key, value in filters.items() if value}
    newer = max(offset - PAGE_SIZE, 0) if offset > 0 else None
    older = offset + PAGE_SIZE if offset + PAGE_SIZE < count else None
    return {
        "newer": None if newer is None else f"{LIST_PAGE}?{urlencode(kept | {'offset': newer})}",
        "older": None if older is None else f"{LIST_PAGE}?{urlencode(kept | {'offset': older})}",
    }


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form's fields (first value of each); a body over ``MAX_FORM_BYTES`` is refused."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise BadRequest("the form is too large")
    fields = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    return {key: values[0] for key, values in fields.items()}
