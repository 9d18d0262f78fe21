"""The public page of each edition, rendered once and kept in memory.

An edition's web page is the same for every visitor until the edition is
rendered again, so it is built once (the stored HTML with non-personal links,
encoded) and kept by day with the edition id and `rendered_at` it was built
from. Whether the edition is still public, and still that rendering, is read
again (one small query) at most every `recheck_seconds`: a newer `rendered_at`
rebuilds the page, an edition withdrawn from the public (cancelled) disappears
within that time. The least recently read pages leave first when more than
`max_pages` are held.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

RECHECK_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class EditionPage:
    """A built page and the rendering it was built from."""

    edition_id: int
    rendered_at: dt.datetime
    body: bytes


class EditionPageCache:
    """Built pages by day, each for one rendering; the least recently read go first."""

    def __init__(
        self,
        max_pages: int = 64,
        *,
        recheck_seconds: float = RECHECK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_pages < 1:
            raise ValueError("the cache needs room for at least one page")
        self.max_pages = max_pages
        self.recheck_seconds = recheck_seconds
        self._clock = clock
        self._pages: OrderedDict[dt.date, tuple[EditionPage, float]] = OrderedDict()
        self._lock = threading.Lock()

    def fresh(self, day: dt.date) -> EditionPage | None:
        """The day's page if its edition was checked within `recheck_seconds`."""
        with self._lock:
            held = self._pages.get(day)
            if held is None or self._clock() - held[1] >= self.recheck_seconds:
                return None
            self._pages.move_to_end(day)
            return held[0]

    def checked(
        self, day: dt.date, edition_id: int, rendered_at: dt.datetime
    ) -> EditionPage | None:
        """The day's page if built from this rendering (now checked again), else None."""
        with self._lock:
            held = self._pages.get(day)
            if held is None:
                return None
            page = held[0]
            if page.edition_id != edition_id or page.rendered_at != rendered_at:
                del self._pages[day]
                return None
            self._pages[day] = (page, self._clock())
            self._pages.move_to_end(day)
            return page

    def put(self, day: dt.date, page: EditionPage) -> None:
        """Keep a page just built (replacing one built from another rendering)."""
        with self._lock:
            self._pages[day] = (page, self._clock())
            self._pages.move_to_end(day)
            while len(self._pages) > self.max_pages:
                self._pages.popitem(last=False)

    def forget(self, day: dt.date) -> None:
        """Drop the day's page (its edition is no longer public)."""
        with self._lock:
            self._pages.pop(day, None)

    def __len__(self) -> int:
        return len(self._pages)
