"""Reads interceptions from the store: pages with their children, counts, cursors, facets, usage.

Every call blocks (clickhouse-connect is synchronous and serializes the calls of one client), so the
API runs these in its thread pool; the independent queries of one page run concurrently, each on a
client lent by :class:`aibridge.api.pool.ClientSource`. Store failures surface as
:class:`StoreUnavailable` naming what failed, never as a bare driver exception.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from clickhouse_connect.driver.exceptions import ClickHouseError
from opentelemetry.trace import SpanKind

from aibridge import metrics, store, telemetry
from aibridge.api import sql, threads
from aibridge.api.errors import StoreUnavailable
from aibridge.api.pool import ClientSource, describe
from aibridge.api.render import Row, add_cost, render_child, render_interception

__all__ = ["ClientSource", "InterceptionReader", "PositionCache"]

log = logging.getLogger("aibridge.api")

_INITIATOR_CACHE_SECONDS = 300.0
# Rows read per interception wanted on one user's page: its started and ended rows until a merge, and a
# redelivered copy. Beyond _FETCH_AHEAD_MAX rows (deep offsets) the exact query reads less.
_COPIES_FETCHED = 3
_FETCH_AHEAD_MAX = 1000
_INITIATOR_CACHE_SIZE = 10_000


class PositionCache:
    """Recently served page ends (id → started_at, initiator): most cursors need no lookup."""

    def __init__(self, size: int = 10_000) -> None:
        self._entries: OrderedDict[UUID, tuple[datetime, str]] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def remember(self, interception_id: UUID, started_at: datetime, initiator_id: str) -> None:
        with self._lock:
            self._entries[interception_id] = (started_at, initiator_id)
            self._entries.move_to_end(interception_id)
            if len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def get(self, interception_id: UUID, initiator_ids: tuple[str, ...] | None) -> datetime | None:
        with self._lock:
            entry = self._entries.get(interception_id)
        if entry is None or (initiator_ids is not None and entry[1] not in initiator_ids):
            return None
        return entry[0]


def first_of_each_id(rows: Sequence[Sequence[Any]]) -> list[Sequence[Any]]:
    """The first row of each id (column 0), in order: with rows ordered by version descending within an
    id, each id's highest version."""
    seen: set[Any] = set()
    first = []
    for row in rows:
        if row[0] not in seen:
            seen.add(row[0])
            first.append(row)
    return first


class InterceptionReader:
    def __init__(self, source: ClientSource, query_timeout: int = 30) -> None:
        self._source = source
        self._timeout = query_timeout
        self._positions = PositionCache()
        self._initiators: dict[str, tuple[tuple[str, ...], float]] = {}

    def concurrently(self, call: Callable[[], Any]) -> Future[Any]:
        """``call`` started on the reader's query pool (with another client of the store)."""
        return self._source.submit(call)

    def page(self, criteria: sql.Criteria, limit: int, offset: int, after: sql.Position | None) -> list[Row]:
        if criteria.matches_nothing:
            return []
        rows = self._page_rows(criteria, limit, offset, after)
        results = self.rendered(rows)
        if results:
            last = rows[-1]
            self._positions.remember(last[0], last[14], last[1])
        return results

    def _page_rows(
        self, criteria: sql.Criteria, limit: int, offset: int, after: sql.Position | None
    ) -> Sequence[Sequence[Any]]:
        """One user's page from a few copies per id read in key order, else (or when they hold too few
        ids) the exact ``LIMIT 1 BY id`` query."""
        wanted = offset + limit
        if criteria.initiator_ids is None or criteria.session_id is not None or wanted > _FETCH_AHEAD_MAX:
            return self._rows("page", sql.page(criteria, limit, offset, after))
        fetch = _COPIES_FETCHED * wanted
        copies = self._rows("page", sql.user_rows(criteria, fetch, after))
        newest = first_of_each_id(copies)
        if len(newest) >= wanted or len(copies) < fetch:
            return newest[offset:wanted]
        return self._rows("page", sql.page(criteria, limit, offset, after))

    def count(self, criteria: sql.Criteria) -> int:
        if criteria.matches_nothing:
            return 0
        return int(self._rows("count", sql.count(criteria))[0][0])

    def position(self, interception_id: UUID, initiator_ids: tuple[str, ...] | None) -> sql.Position | None:
        started_at = self._positions.get(interception_id, initiator_ids)
        if started_at is None:
            rows = self._rows("cursor", sql.position(interception_id, initiator_ids))
            if not rows:
                return None
            started_at = rows[0][0]
        return sql.Position(started_at, interception_id)

    def thread_span(self, thread_id: UUID, initiator_ids: tuple[str, ...] | None) -> threads.Span | None:
        """The thread that ``thread_id`` started, if it started one the caller (``initiator_ids``) may see."""
        starters = self._rows("thread", threads.starter_statement(thread_id, initiator_ids))
        if not starters:
            return None
        session_id, initiator_id, client, started_at, _ = starters[0]
        lane = self._rows("thread", threads.lane_statement(session_id, initiator_id, client, started_at))
        return threads.span(starters[0], lane[0])

    def initiator_ids(self, value: str) -> tuple[str, ...]:
        """User ids for a user id or username; found ones are remembered for a few minutes."""
        now = time.monotonic()
        cached = self._initiators.get(value)
        if cached is not None and cached[1] > now:
            return cached[0]
        found = tuple(str(row[0]) for row in self._rows("initiators", sql.initiators(value)))
        if found:
            if len(self._initiators) >= _INITIATOR_CACHE_SIZE:
                self._initiators.clear()
            self._initiators[value] = (found, now + _INITIATOR_CACHE_SECONDS)
        return found

    def facet(self, column: sql.Facet, criteria: sql.Criteria) -> list[str]:
        if criteria.matches_nothing:
            return []
        return [str(row[0]) for row in self._rows("facets", sql.facet(column, criteria))]

    def usage(
        self, criteria: sql.Criteria, group_by: tuple[sql.GroupBy, ...]
    ) -> tuple[Sequence[Sequence[Any]], Sequence[Sequence[Any]]]:
        """Rows of :func:`sql.usage_interceptions` and of :func:`sql.usage_tokens`, queried concurrently."""
        if criteria.matches_nothing:
            return [], []
        tokens = self.concurrently(lambda: self._rows("usage", sql.usage_tokens(criteria, group_by)))
        counts = self._rows("usage", sql.usage_interceptions(criteria, group_by))
        return counts, tokens.result()

    def unpriced_models(self, criteria: sql.Criteria) -> Sequence[Sequence[Any]]:
        if criteria.matches_nothing:
            return []
        return self._rows("usage", sql.unpriced_models(criteria))

    def query(self, name: str, statement: sql.Statement) -> Sequence[Sequence[Any]]:
        """The rows of a statement built elsewhere (:mod:`aibridge.api.sessions`), timed and traced as ``name``."""
        return self._rows(name, statement)

    def rendered(self, rows: Sequence[Sequence[Any]], *, with_threads: bool = True) -> list[Row]:
        """Interception rows (:data:`sql.INTERCEPTION_COLUMNS`, one per id) rendered with their children and
        cost, and (``with_threads``) the thread of each one that has a session."""
        results = [render_interception(dict(zip(sql.INTERCEPTION_COLUMNS, row, strict=True))) for row in rows]
        session_ids = sorted({result["session_id"] for result in results if result["session_id"]})
        users = {result["initiator"]["id"] for result in results}
        found = (
            self.concurrently(lambda: self._thread_ids(session_ids, users)) if with_threads and session_ids else None
        )
        if results:
            in_flight_until = datetime.now(UTC) + sql.IN_FLIGHT_MARGIN
            span = sql.PageSpan(
                interception_ids=[row[0] for row in rows],
                initiator_ids={str(row[1]) for row in rows},
                earliest_start=min(row[14] for row in rows),
                latest_end=max(sql.as_utc(row[15]) if row[15] else in_flight_until for row in rows),
            )
            self._attach_children(results, span)
            for result in results:
                add_cost(result)
        if found is not None:
            thread_of = found.result()
            for result in results:
                result["thread_id"] = thread_of.get(result["id"])
        return results

    def _thread_ids(self, session_ids: list[str], users: set[str]) -> dict[str, str]:
        """The thread of each interception of the sessions (their rows of these users)."""
        rows = self._rows("threads", threads.members_statement(session_ids, users))
        return threads.thread_ids(threads.members(rows))

    def close(self) -> None:
        self._source.close()

    def with_client(self, call: Callable[[Any], Any]) -> Any:
        """``call(client)`` with a client of the store (budgets read and write through it); a store error is a 503."""
        try:
            with self._source.lease() as client:
                return call(client)
        except (ClickHouseError, store.StoreError) as exc:
            log.warning("store call failed: %s", exc)
            raise StoreUnavailable("the store failed to answer", str(exc)) from exc

    def ping(self) -> None:
        self._rows("ping", sql.Statement("SELECT 1"))

    def _attach_children(self, results: list[Row], span: sql.PageSpan) -> None:
        tables = list(sql.CHILD_COLUMNS)
        others = {table: self.concurrently(functools.partial(self._children, table, span)) for table in tables[1:]}
        found = {tables[0]: self._children(tables[0], span)} | {table: f.result() for table, f in others.items()}
        by_id = {result["id"]: result for result in results}
        for table in tables:
            for child in found[table]:
                by_id[child["interception_id"]][table].append(child)

    def _children(self, table: str, span: sql.PageSpan) -> list[Row]:
        columns = sql.CHILD_COLUMNS[table]
        rows = self._rows("children", sql.children(table, span))
        unique = {(row[0], row[1]): row for row in rows}  # copies of a redelivered event are identical
        ordered = sorted(unique.values(), key=lambda row: (row[-1], str(row[1])))
        return [render_child(dict(zip(columns, row, strict=True))) for row in ordered]

    def _rows(self, name: str, statement: sql.Statement) -> Sequence[Sequence[Any]]:
        if not telemetry.enabled():
            return self._query(name, statement)
        with telemetry.tracer(telemetry.API_SERVICE).start_as_current_span(
            "Store.Query", kind=SpanKind.CLIENT, attributes={"db.system.name": "clickhouse", "aibridge.query": name}
        ):
            return self._query(name, statement)

    def _query(self, name: str, statement: sql.Statement) -> Sequence[Sequence[Any]]:
        started = time.perf_counter()
        try:
            settings = {"max_execution_time": self._timeout} | statement.settings
            with self._source.lease() as client:
                result = client.query(statement.sql, parameters=statement.parameters, settings=settings)
            return result.result_rows
        except ClickHouseError as exc:
            metrics.API_STORE_ERRORS.labels(name).inc()
            log.warning("store query %s failed: %s", name, describe(exc))
            raise StoreUnavailable("the interception store failed to answer", describe(exc)) from exc
        finally:
            metrics.API_STORE_QUERY_SECONDS.labels(name).observe(time.perf_counter() - started)
