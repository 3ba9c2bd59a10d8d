"""Budgets through the API: admins set, list and delete them; anyone reads the ones that apply to them.

``PUT`` and ``DELETE`` of ``/budgets/{scope}/{name}/{period}`` are for admins and each writes an audit
record (type ``change``, action ``budgets.set`` or ``budgets.delete``, the budget before and after)
through the API's audit sink, whatever the outcome. ``GET /budgets`` lists every budget (admins and
auditors); ``GET /budgets/me`` answers any caller with the budgets that apply to them and what they
spent this period, as the store has it.
"""

import datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field

from aibridge import budgets, pricing
from aibridge.api.audit import actor, outcome
from aibridge.api.errors import ApiError, BadRequest, Forbidden, NotFound
from aibridge.auth import Identity, Role
from aibridge.budgets import Budget, BudgetError, Period, Scope
from aibridge.events import format_time, new_id, utcnow
from aibridge.groups import GroupMap

SET: Final = "budgets.set"
DELETE: Final = "budgets.delete"


class BudgetIn(BaseModel):
    limit: str = Field(description='USD per period as a decimal string, e.g. "100.00".', max_length=40)
    warn: str = Field(default="0.8", description="The share of the limit whose spending warns (0 < warn <= 1).")


class BudgetOut(BaseModel):
    scope: str
    name: str
    period: str
    limit: str
    warn: str
    updated_at: str | None = None
    updated_by: str = ""


class MyBudget(BudgetOut):
    spent: str = Field(description="USD spent this period (priced usages stored so far).")
    resets_at: str


def build_router(authenticate: Any) -> APIRouter:
    """The routes, with the app's ``authenticate`` dependency."""
    caller = Annotated[Identity, Depends(authenticate)]
    router = APIRouter(prefix="/api/v2/aibridge/budgets", tags=["budgets"])

    @router.get("", response_model=list[BudgetOut])
    def list_budgets(request: Request, identity: caller) -> Any:
        """Every budget in force (admins and auditors)."""
        if not identity.role.sees_everyone:
            raise Forbidden("listing every budget needs an auditor or admin token; GET /budgets/me shows yours")
        return [rendered(budget) for budget in _run(request, budgets.load)]

    @router.get("/me", response_model=list[MyBudget])
    def my_budgets(request: Request, identity: caller) -> Any:
        """The budgets that apply to the caller (their own, else the highest of their groups') and their spending."""
        groups: GroupMap = request.app.state.spend.groups
        now = datetime.datetime.now(datetime.UTC)
        book = budgets.BudgetBook.of(_run(request, budgets.load))
        member_of = groups.groups_of(identity.user_id, identity.username, identity.groups)
        applying = budgets.effective(book, identity.user_id, identity.username, member_of)
        spent = _run(request, lambda client: budgets.spent(client, now)) if applying else None
        return [_mine(budget, spent, identity.user_id, now) for budget in applying]

    @router.put("/{scope}/{name}/{period}", response_model=BudgetOut)
    def set_budget(*, request: Request, identity: caller, scope: str, name: str, period: str, body: BudgetIn) -> Any:
        """Set the budget of a user (id or username) or group for a period (day or month, UTC). Admins only."""
        with _Change(request, identity, SET) as change:
            _admin(identity)
            budget = _validated(scope, name, period, body)
            change.before = _run(request, lambda client: budgets.find(client, budget.scope, name, budget.period))
            now = datetime.datetime.now(datetime.UTC)
            change.after = _run(request, lambda client: budgets.save(client, budget, _who(identity), now))
            return rendered(change.after)

    @router.delete("/{scope}/{name}/{period}", status_code=204)
    def delete_budget(request: Request, identity: caller, scope: str, name: str, period: str) -> Response:
        """Delete a budget. Admins only; 404 when there is none."""
        with _Change(request, identity, DELETE) as change:
            _admin(identity)
            target = _target(scope, name, period)
            change.before = _run(request, lambda client: budgets.find(client, *target))
            if change.before is None:
                raise NotFound(f"there is no {period} budget of {scope} {name}")
            before, now = change.before, datetime.datetime.now(datetime.UTC)
            _run(request, lambda client: budgets.delete(client, before, _who(identity), now))
            return Response(status_code=204)

    return router


def rendered(budget: Budget) -> dict[str, Any]:
    return {
        "scope": budget.scope.value,
        "name": budget.name,
        "period": budget.period.value,
        "limit": pricing.format_cost(budget.limit),
        "warn": pricing.format_cost(budget.warn),
        "updated_at": format_time(budget.updated_at) if budget.updated_at else None,
        "updated_by": budget.updated_by,
    }


def _mine(budget: Budget, spent: budgets.Spent | None, user_id: str, now: datetime.datetime) -> dict[str, Any]:
    sums = {} if spent is None else spent.day if budget.period is Period.DAY else spent.month
    return rendered(budget) | {
        "spent": pricing.format_cost(sums.get(user_id, Decimal(0))),
        "resets_at": format_time(budgets.period_reset(budget.period, now)),
    }


class _Change:
    """The audit record of one budget change, written whatever the outcome."""

    def __init__(self, request: Request, identity: Identity, action: str) -> None:
        self.request, self.identity, self.action = request, identity, action
        self.before: Budget | None = None
        self.after: Budget | None = None

    def __enter__(self) -> "_Change":
        return self

    def __exit__(self, kind: object, error: BaseException | None, traceback: object) -> None:
        status = 200 if error is None else error.status_code if isinstance(error, ApiError) else 500
        if error is None and self.action == DELETE:
            status = 204
        message = error.message if isinstance(error, ApiError) else None if error is None else type(error).__name__
        self.request.app.state.audit.write(self.record(status, message))

    def record(self, status: int, error: str | None) -> dict[str, Any]:
        request = self.request
        peer = request.client.host if request.client else ""
        return {
            "schema_version": 1,
            "event_id": new_id(),
            "type": "change",
            "occurred_at": format_time(utcnow()),
            "action": self.action,
            "actor": actor(self.identity),
            "source": {"ip": peer, "peer": peer, "user_agent": request.headers.get("user-agent", "")[:512]},
            "request": {
                "method": request.method,
                "path": request.url.path[:1024],
                "q": None,
                "filters": {},
                "pagination": {"limit": None, "offset": None, "after_id": None},
            },
            "result": {"status": status, "outcome": outcome(status), "rows": 0, "matched": None, "error": error},
            "change": {
                "before": None if self.before is None else _audited(self.before),
                "after": None if self.after is None else _audited(self.after),
            },
        }


def _audited(budget: Budget) -> dict[str, str]:
    fields = rendered(budget)
    return {key: fields[key] for key in ("scope", "name", "period", "limit", "warn")}


def _admin(identity: Identity) -> None:
    if identity.role is not Role.ADMIN:
        raise Forbidden("changing budgets needs an admin token")


def _validated(scope: str, name: str, period: str, body: BudgetIn) -> Budget:
    try:
        return budgets.validated(scope, name, period, _decimal("limit", body.limit), _decimal("warn", body.warn))
    except BudgetError as exc:
        raise BadRequest(str(exc)) from exc


def _target(scope: str, name: str, period: str) -> tuple[Scope, str, Period]:
    try:
        return Scope(scope), name, Period(period)
    except ValueError as exc:
        raise BadRequest("scope must be user or group and period day or month", str(exc)) from exc


def _decimal(field: str, text: str) -> Decimal:
    try:
        return Decimal(text.strip())
    except InvalidOperation as exc:
        raise BadRequest(f"{field} must be a decimal number such as 100.00 (got {text!r})") from exc


def _who(identity: Identity) -> str:
    return identity.username or identity.user_id


def _run(request: Request, call: Any) -> Any:
    """``call(client)`` with a client of the store (the API's pool); a store error is a 503."""
    return request.app.state.reader.with_client(call)
