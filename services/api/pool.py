"""Store clients for the API: a few of them, so independent queries of one request run at once.

clickhouse-connect serializes the calls of one client (an embedded chDB client behind its own lock),
while the engine itself serves concurrent queries. So the API holds up to ``size`` clients for its
store, lent out one query at a time, and runs a page's independent queries (the rows, the exact
count, the three child tables) on a thread pool of the same size.
"""

from __future__ import annotations

import contextvars
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar
from urllib.parse import urlsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from aibridge import store
from aibridge.api.errors import StoreUnavailable
from aibridge.settings import StoreSettings

log = logging.getLogger("aibridge.api")

_RECONNECT_PAUSE = 1.0
POOL_SIZE = 3
T = TypeVar("T")


class ClientSource:
    """Up to ``size`` clients of the store: the one given at start (or connected on first use, and
    again after a failed attempt), plus more connected as concurrent queries need them."""

    def __init__(self, settings: StoreSettings, client: Client | None, size: int = POOL_SIZE) -> None:
        self._settings = settings
        self._client = client
        self._size = max(1, size)
        self._idle: queue.LifoQueue[Client] = queue.LifoQueue()
        self._created = 0 if client is None else 1
        self._lock = threading.Lock()
        self._failed_at = 0.0
        self._failure = ""
        self._executor = ThreadPoolExecutor(max_workers=self._size, thread_name_prefix="aibridge-api-query")
        if client is not None:
            self._idle.put(client)

    def submit(self, call: Callable[[], T]) -> Future[T]:
        """``call`` started on the source's thread pool, in the caller's context (so the spans of its
        queries stay children of the request's span)."""
        context = contextvars.copy_context()
        try:
            return self._executor.submit(context.run, call)
        except RuntimeError:  # closed: a request outliving the server's shutdown grace runs it inline
            done: Future[T] = Future()
            try:
                done.set_result(call())
            except BaseException as exc:
                done.set_exception(exc)
            return done

    def close(self) -> None:
        """Stop the query threads once their work is done (the clients stay: embedded ones are the
        process's, HTTP ones hold no server-side state)."""
        self._executor.shutdown(wait=False)

    def get(self) -> Client:
        """The first client (connected now if there is none yet)."""
        client = self._client
        if client is not None:
            return client
        with self._lock:
            if self._client is None:
                self._client = self._connect(first=True)
                self._created += 1
                self._idle.put(self._client)
            return self._client

    @contextmanager
    def lease(self) -> Iterator[Client]:
        """An idle client for one query; a new one while fewer than ``size`` exist, else wait."""
        client = self._take()
        try:
            yield client
        finally:
            self._idle.put(client)

    def _take(self) -> Client:
        self.get()
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            grow = self._created < self._size
            if grow:
                self._created += 1
        if not grow:
            return self._idle.get()
        try:
            return self._connect(first=False)
        except StoreUnavailable:
            with self._lock:
                self._created -= 1
            return self._idle.get()

    def _connect(self, *, first: bool) -> Client:
        if time.monotonic() - self._failed_at < _RECONNECT_PAUSE:
            raise StoreUnavailable("the interception store is unreachable", self._failure)
        url, database = self._settings.clickhouse_url, self._settings.clickhouse_database
        try:
            if first or urlsplit(url).scheme != "chdb":
                return store.connect(url, database, **self._settings.clickhouse_options())
            # store.connect shares one embedded client per process; chDB serves several at once.
            return clickhouse_connect.get_client(dsn=url, database=database)
        except (ClickHouseError, OSError) as exc:
            self._failed_at, self._failure = time.monotonic(), describe(exc)
            log.warning("cannot reach the store: %s", self._failure)
            raise StoreUnavailable("the interception store is unreachable", self._failure) from exc


def describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:300]}"
