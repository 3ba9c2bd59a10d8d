"""Finding the rows the store refuses: bisect a refused insert until every refused row stands alone.

One row whose value a column cannot take makes the store refuse the whole insert, and would refuse
it on every retry. :func:`isolate` inserts the halves of the refused rows, then the halves of each
refused half, and so on: every accepted row is inserted once, a refused row is found alone, and
``b`` refused rows among ``n`` cost about ``2·b·log2(n)`` inserts. Only :class:`StoreRejected`
splits; :class:`aibridge.store.StoreUnavailable` propagates, and the caller retries the lot later
(rows already inserted then arrive twice, which the tables' deduplication absorbs).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aibridge.store import StoreRejected

Insert = Callable[[Sequence[Any]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Refusal:
    """The row at ``index`` of the rows given to :func:`isolate`, and the store's error for it alone."""

    index: int
    error: StoreRejected


@dataclass
class Isolation:
    refused: list[Refusal] = field(default_factory=list)
    inserts: int = 0


async def isolate(insert: Insert, rows: Sequence[Any], error: StoreRejected) -> Isolation:
    """``insert(rows)`` raised ``error``: store every row the store accepts, return the refused ones."""
    outcome = Isolation()
    await _split(insert, rows, 0, len(rows), error, outcome)
    return outcome


async def _split(  # noqa: PLR0917
    insert: Insert, rows: Sequence[Any], start: int, end: int, error: StoreRejected, outcome: Isolation
) -> None:
    if end - start == 1:
        outcome.refused.append(Refusal(start, error))
        return
    middle = (start + end) // 2
    for low, high in ((start, middle), (middle, end)):
        outcome.inserts += 1
        try:
            await insert(rows[low:high])
        except StoreRejected as refused:
            await _split(insert, rows, low, high, refused, outcome)
