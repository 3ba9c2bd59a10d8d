"""The store's queries, as SQL text plus bound parameters (pure: no I/O).

Deduplication without ``FINAL`` over the whole table: every version and redelivered copy of one
interception shares its sorting key (``started_at``, ``id``), so a page is the first ``limit``
DISTINCT keys in key order (read backwards along the primary key or a projection, stopping early),
and its rows are then fetched by key with ``LIMIT 1 BY id`` keeping the highest ``version``.
Anything limited to some users reads ``interceptions_by_initiator`` instead, the same rows ordered by
(``initiator_id``, ``started_at``, ``id``): one user's page is then a single read in key order, where
copies of an id lie next to each other and ``LIMIT 1 BY id`` keeps the highest ``version``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal
from uuid import UUID

from aibridge import store

INTERCEPTION_COLUMNS: Final = (
    "id", "initiator_id", "initiator_username", "provider", "model", "client", "api_key_id", "route",
    "streaming", "user_agent", "status", "http_status", "error", "metadata", "started_at", "ended_at",
    "session_id", "turn",
)  # fmt: skip
CHILD_COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    store.USER_PROMPTS: ("interception_id", "id", "provider_response_id", "prompt", "metadata", "created_at"),
    store.TOKEN_USAGES: (
        "interception_id", "id", "provider_response_id", "input_tokens", "output_tokens",
        "cache_read_input_tokens", "cache_write_input_tokens", "cost", "metadata", "created_at",
    ),
    store.TOOL_USAGES: (
        "interception_id", "id", "provider_response_id", "server_url", "server_name", "tool", "input", "injected",
        "invocation_error", "duration_ms", "metadata", "created_at",
    ),
}  # fmt: skip
# A child event happens during its interception (same proxy clock, emitted before the ended event), so
# its created_at lies between the interception's started_at and ended_at; the margin absorbs clock
# steps. While an interception is in flight the window ends at the API's clock plus IN_FLIGHT_MARGIN
# (the proxy's clock may run ahead on another machine). The window lets ClickHouse skip parts and read
# the page's children together from the by_time projection.
CHILD_CLOCK_MARGIN: Final = timedelta(minutes=5)
IN_FLIGHT_MARGIN: Final = timedelta(hours=1)
EARLIEST: Final = datetime(1970, 1, 2, tzinfo=UTC)
LATEST: Final = datetime(2105, 12, 31, tzinfo=UTC)

GroupBy = Literal["user", "group", "model", "provider", "client", "day"]
# A group is not stored: rows are grouped by user and users folded into their groups (services/api).
GROUP_COLUMNS: Final[dict[str, str]] = {
    "user": "initiator_id",
    "group": "initiator_id",
    "model": "model",
    "provider": "provider",
    "client": "client",
}
Facet = Literal["model", "client", "provider"]


def as_utc(moment: datetime) -> datetime:
    """The store returns naive UTC datetimes; requests carry aware ones."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def format_param_time(moment: datetime) -> str:
    return as_utc(moment).strftime("%Y-%m-%d %H:%M:%S.%f")


@dataclass(frozen=True, slots=True)
class Criteria:
    """Resolved filters: ``initiator_ids`` None means everyone, an empty tuple no one."""

    initiator_ids: tuple[str, ...] | None = None
    provider: str | None = None
    model: str | None = None
    client: str | None = None
    started_after: datetime | None = None
    started_before: datetime | None = None
    session_id: str | None = None

    @property
    def matches_nothing(self) -> bool:
        return self.initiator_ids == ()


@dataclass
class Statement:
    sql: str
    parameters: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


# Every copy of an interception or child row has the same partition (same started_at / created_at).
_FINAL_SETTINGS: Final = {"do_not_merge_across_partitions_select_final": 1}
_IN_ORDER_SETTINGS: Final = {"max_threads": 1}
_BESIDE_SETTINGS: Final = {"max_threads": 1}


@dataclass(frozen=True, slots=True)
class PageSpan:
    """What locates a page's children: its interceptions, their initiators, their time window."""

    interception_ids: list[UUID]
    initiator_ids: set[str]
    earliest_start: datetime
    latest_end: datetime


@dataclass(frozen=True, slots=True)
class Position:
    """Where a keyset cursor points: the (started_at, id) key of the last row already seen."""

    started_at: datetime
    id: UUID


def interceptions_table(criteria: Criteria) -> str:
    """The copy that reads ``criteria``'s rows fastest: one session's rows, or some users', lie together in
    an index table."""
    if criteria.session_id is not None:
        return store.INTERCEPTIONS_BY_SESSION
    return store.INTERCEPTIONS if criteria.initiator_ids is None else store.INTERCEPTIONS_BY_INITIATOR


def where(criteria: Criteria, time_column: str = "started_at") -> Statement:
    """``WHERE ...`` for the criteria (always at least ``1``), with its parameters."""
    conditions: list[str] = ["1"]
    parameters: dict[str, Any] = {}
    if criteria.initiator_ids is not None:
        conditions.append("initiator_id IN {initiator_ids:Array(String)}")
        parameters["initiator_ids"] = list(criteria.initiator_ids)
    for column in ("provider", "model", "client"):
        value = getattr(criteria, column)
        if value is not None:
            conditions.append(f"{column} = {{{column}:String}}")
            parameters[column] = value
    if criteria.session_id is not None:
        conditions.append(_session_condition(time_column))
        parameters["session_id"] = criteria.session_id
    if criteria.started_after is not None:
        conditions.append(f"{time_column} >= {{started_after:DateTime64(6, 'UTC')}}")
        parameters["started_after"] = format_param_time(criteria.started_after)
    if criteria.started_before is not None:
        conditions.append(f"{time_column} < {{started_before:DateTime64(6, 'UTC')}}")
        parameters["started_before"] = format_param_time(criteria.started_before)
    return Statement("WHERE " + " AND ".join(conditions), parameters)


def _session_condition(time_column: str) -> str:
    """An interception row carries its session; a child row (timed by created_at) is one of the session's
    interceptions'."""
    if time_column == "started_at":
        return "session_id = {session_id:String}"
    return (
        f"interception_id IN (SELECT id FROM {store.INTERCEPTIONS_BY_SESSION} WHERE session_id = {{session_id:String}})"
    )


def _page_filters(criteria: Criteria, after: Position | None) -> Statement:
    filters = where(criteria)
    if after is not None:
        filters.sql += (
            " AND started_at <= {after_at:DateTime64(6, 'UTC')}"
            " AND (started_at < {after_at:DateTime64(6, 'UTC')} OR id < {after_id:UUID})"
        )
        filters.parameters |= {"after_at": format_param_time(after.started_at), "after_id": str(after.id)}
    return filters


_NEWEST = "ORDER BY started_at DESC, id DESC"


def page(criteria: Criteria, limit: int, offset: int, after: Position | None) -> Statement:
    """The page's interception rows, newest first, one row per id (its highest version)."""
    filters = _page_filters(criteria, after)
    parameters = filters.parameters | {"limit": limit, "offset": offset}
    window = "LIMIT {limit:UInt32} OFFSET {offset:UInt64}"
    columns = ", ".join(INTERCEPTION_COLUMNS)
    if criteria.initiator_ids is not None or criteria.session_id is not None:
        table = interceptions_table(criteria)
        sql = f"SELECT {columns} FROM {table} {filters.sql} {_NEWEST}, version DESC LIMIT 1 BY id {window}"
        return Statement(sql, parameters)
    keys = f"SELECT DISTINCT started_at, id FROM {store.INTERCEPTIONS} {filters.sql} {_NEWEST} {window}"
    sql = (
        f"SELECT {columns} FROM {store.INTERCEPTIONS} WHERE (started_at, id) IN ({keys}) "
        f"{_NEWEST}, version DESC LIMIT 1 BY id"
    )
    # A read in key order that stops early is fastest on one thread (measured on the 10 M store: 15-20 ms
    # instead of 25-35 ms).
    return Statement(sql, parameters, _IN_ORDER_SETTINGS)


def user_rows(criteria: Criteria, fetch: int, after: Position | None) -> Statement:
    """The newest ``fetch`` rows of some users' interceptions, copies included, each id's highest version
    first: the first row of each id is what :func:`page` returns for it.

    In ``interceptions_by_initiator`` a user's rows are in key order, so ClickHouse reads backwards and
    stops after ``fetch`` rows (13-15 ms for a page on the 10 M store); ``LIMIT 1 BY id`` would make it
    read all the user's rows first (17-25 ms). :mod:`aibridge.api.repository` keeps the first row of
    each id, and falls back to :func:`page` when the rows fetched hold too few ids.
    """
    if criteria.initiator_ids is None:
        raise ValueError("user_rows reads interceptions_by_initiator: the criteria must name initiators")
    filters = _page_filters(criteria, after)
    return Statement(
        f"SELECT {', '.join(INTERCEPTION_COLUMNS)} FROM {store.INTERCEPTIONS_BY_INITIATOR} {filters.sql} "
        f"{_NEWEST}, version DESC LIMIT {{fetch:UInt32}}",
        filters.parameters | {"fetch": fetch},
    )


def children(table: str, page: PageSpan) -> Statement:
    """The children of the page's interceptions (their ids, initiators and time window).

    No ORDER BY or LIMIT BY here: either would make ClickHouse read in key order and refuse the
    by_time projection; :mod:`aibridge.api.repository` orders and deduplicates the few rows instead.
    """
    sql = (
        f"SELECT {', '.join(CHILD_COLUMNS[table])} FROM {table} "
        "WHERE initiator_id IN {initiator_ids:Array(String)} "
        "AND created_at BETWEEN {since:DateTime64(6, 'UTC')} AND {until:DateTime64(6, 'UTC')} "
        "AND interception_id IN {ids:Array(UUID)}"
    )
    since = max(as_utc(page.earliest_start) - CHILD_CLOCK_MARGIN, EARLIEST)
    until = min(as_utc(page.latest_end) + CHILD_CLOCK_MARGIN, LATEST)
    return Statement(
        sql,
        {
            "initiator_ids": sorted(page.initiator_ids),
            "since": format_param_time(since),
            "until": format_param_time(until),
            "ids": list(page.interception_ids),  # UUIDs bind as they are; strings are escaped char by char
        },
    )


def count(criteria: Criteria) -> Statement:
    """Exact number of distinct interceptions matching.

    With an initiator, that user's rows lie together in ``interceptions_by_initiator``, where an exact
    distinct count is cheap. Otherwise ``FINAL``: ClickHouse only merges the key ranges where parts
    overlap (recent data), and never across partitions, which is right because every copy of an
    interception has the same started_at and so the same partition.
    """
    filters = where(criteria)
    # The count runs beside the page (repository): on one thread it leaves the other core to the page.
    if criteria.initiator_ids is not None or criteria.session_id is not None:
        return Statement(
            f"SELECT uniqExact(id) FROM {interceptions_table(criteria)} {filters.sql}",
            filters.parameters,
            _BESIDE_SETTINGS,
        )
    return Statement(
        f"SELECT count() FROM {store.INTERCEPTIONS} FINAL {filters.sql}",
        filters.parameters,
        _FINAL_SETTINGS | _BESIDE_SETTINGS,
    )


def position(interception_id: UUID, initiator_ids: tuple[str, ...] | None) -> Statement:
    scope = "" if initiator_ids is None else " AND initiator_id IN {initiator_ids:Array(String)}"
    sql = f"SELECT started_at FROM {store.INTERCEPTIONS} WHERE id = {{id:UUID}}{scope} LIMIT 1"
    parameters: dict[str, Any] = {"id": str(interception_id)}
    if initiator_ids is not None:
        parameters["initiator_ids"] = list(initiator_ids)
    return Statement(sql, parameters, _IN_ORDER_SETTINGS)  # a point lookup: one thread is quicker


def initiators(value: str) -> Statement:
    """User ids whose id or username is ``value`` (the small ``initiators`` table, one row per pair)."""
    return Statement(
        f"SELECT DISTINCT initiator_id FROM {store.INITIATORS} "
        "WHERE initiator_username = {value:String} OR initiator_id = {value:String} "
        "ORDER BY initiator_id LIMIT 1000",
        {"value": value},
    )


def facet(column: Facet, criteria: Criteria) -> Statement:
    filters = where(criteria)
    return Statement(
        f"SELECT {column} FROM {store.INTERCEPTIONS} {filters.sql} GROUP BY {column} ORDER BY {column}",
        filters.parameters,
    )


def _keys(group_by: tuple[GroupBy, ...], time_column: str) -> str:
    """The grouping expressions, distinct, as k0, k1, ... (a day is the UTC date of ``time_column``)."""
    columns = [f"toString(toDate({time_column}))" if key == "day" else GROUP_COLUMNS[key] for key in group_by]
    return ", ".join(f"{column} AS k{index}" for index, column in enumerate(columns))


def _key_names(group_by: tuple[GroupBy, ...]) -> str:
    return ", ".join(f"k{index}" for index in range(len(group_by)))


def usage_interceptions(criteria: Criteria, group_by: tuple[GroupBy, ...]) -> Statement:
    """(keys..., username, interceptions) by group over interceptions started in the window."""
    filters = where(criteria)
    return Statement(
        f"SELECT {_keys(group_by, 'started_at')}, argMax(initiator_username, started_at) AS username, "
        f"uniqExact(id) AS n FROM {interceptions_table(criteria)} {filters.sql} GROUP BY {_key_names(group_by)}",
        filters.parameters,
    )


def usage_tokens(criteria: Criteria, group_by: tuple[GroupBy, ...]) -> Statement:
    """(keys..., username, 4 token sums, cost, priced usages, unpriced interceptions) by group over token
    usages created in the window, each usage counted once. The cost sum is Decimal(38, 12): exact."""
    filters = where(criteria, time_column="created_at")
    return Statement(
        f"SELECT {_keys(group_by, 'created_at')}, argMax(initiator_username, created_at) AS username, "
        "sum(input_tokens), sum(output_tokens), sum(cache_read_input_tokens), sum(cache_write_input_tokens), "
        "sumOrNull(cost), count(cost), uniqExactIf(interception_id, cost IS NULL) "
        f"FROM {store.TOKEN_USAGES} FINAL {filters.sql} GROUP BY {_key_names(group_by)}",
        filters.parameters,
        _FINAL_SETTINGS,
    )


def unpriced_models(criteria: Criteria) -> Statement:
    """(provider, model, token usages, interceptions) of the usages recorded without a price."""
    filters = where(criteria, time_column="created_at")
    return Statement(
        f"SELECT provider, model, count() AS usages, uniqExact(interception_id) "
        f"FROM {store.TOKEN_USAGES} FINAL {filters.sql} AND cost IS NULL "
        "GROUP BY provider, model ORDER BY usages DESC, provider, model",
        filters.parameters,
        _FINAL_SETTINGS,
    )
