"""The query API's server spans (one per request, continuing an incoming traceparent, named by route
template) and its request metrics, read after known requests."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest
from clickhouse_connect.driver.client import Client
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import REGISTRY
from starlette.applications import Starlette

from aibridge import telemetry
from aibridge.api.component import ApiComponent
from aibridge.api.settings import ApiSettings
from aibridge.auth import TokenVerifier
from aibridge.testing.server import serve_in_thread

ROUTE = "/api/v2/aibridge/interceptions"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    telemetry.configure(True, exporter=exporter)
    yield exporter
    telemetry.configure(False)


@pytest.fixture
def api(chdb_url: str, store_client: Client, verifier: TokenVerifier) -> Iterator[str]:
    settings = ApiSettings(clickhouse_url=chdb_url, clickhouse_database=store_client.database)
    component = ApiComponent(settings, store_client, verifier)
    with serve_in_thread(Starlette(routes=component.routes)) as url:
        yield url


def _requests(endpoint: str, status: str) -> float:
    return REGISTRY.get_sample_value("aibridge_api_requests_total", {"endpoint": endpoint, "status": status}) or 0.0


def _timed(endpoint: str) -> float:
    return REGISTRY.get_sample_value("aibridge_api_request_seconds_count", {"endpoint": endpoint}) or 0.0


def test_a_request_continues_the_callers_trace(
    spans: InMemorySpanExporter, api: str, make_token: Callable[..., str]
) -> None:
    before = _requests(ROUTE, "200"), _requests(ROUTE, "401"), _timed(ROUTE)
    traceparent = f"00-{TRACE_ID}-{PARENT_ID}-01"
    with httpx.Client(base_url=api, timeout=30) as client:
        ok = client.get(ROUTE, headers={"traceparent": traceparent, "authorization": f"Bearer {make_token()}"})
        refused = client.get(ROUTE)
        unknown = client.get("/api/v2/aibridge/nope")
    assert (ok.status_code, refused.status_code, unknown.status_code) == (200, 401, 404)

    finished = spans.get_finished_spans()
    server = [s for s in finished if s.kind is SpanKind.SERVER]
    assert [s.name for s in server] == [f"GET {ROUTE}", f"GET {ROUTE}", "GET"]
    assert {s.resource.attributes["service.name"] for s in finished} == {"aibridge-api"}
    queries = [s for s in finished if s.name == "Store.Query"]
    assert queries and all(q.parent is not None and q.parent.span_id == server[0].context.span_id for q in queries)
    # the page and the count (and any children) run concurrently: their spans finish in any order
    assert {(q.attributes or {}).get("aibridge.query") for q in queries} >= {"page", "count"}
    continued, denied, unmatched = server
    assert f"{continued.context.trace_id:032x}" == TRACE_ID
    assert continued.parent is not None and f"{continued.parent.span_id:016x}" == PARENT_ID
    assert continued.parent.is_remote and continued.kind is SpanKind.SERVER
    assert dict(continued.attributes or {}) == {
        "http.request.method": "GET",
        "url.path": ROUTE,
        "http.route": ROUTE,
        "http.response.status_code": 200,
    }
    assert denied.parent is None and f"{denied.context.trace_id:032x}" != TRACE_ID
    assert denied.attributes is not None and denied.attributes["http.response.status_code"] == 401
    assert denied.status.status_code is StatusCode.UNSET  # a 4xx is the client's error, not the server's
    assert unmatched.attributes is not None and "http.route" not in unmatched.attributes

    assert _requests(ROUTE, "200") - before[0] == 1
    assert _requests(ROUTE, "401") - before[1] == 1
    assert _timed(ROUTE) - before[2] == 2


def test_tracing_off_does_no_span_work(
    api: str, make_token: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    telemetry.configure(False)

    def no_tracer(service: str) -> None:
        raise AssertionError(f"a tracer was asked for ({service}) with tracing off")

    monkeypatch.setattr(telemetry, "tracer", no_tracer)
    with httpx.Client(base_url=api, timeout=30) as client:
        answer = client.get(ROUTE, headers={"authorization": f"Bearer {make_token()}"})
    assert answer.status_code == 200
