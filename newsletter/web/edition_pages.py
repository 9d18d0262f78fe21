"""The public page of each edition, rendered once and kept in memory.

An edition's web page is the same for every visitor until the edition is
rendered again, so it is built once (the stored HTML with non-personal links,
encoded) and kept under its edition id with the `rendered_at` it was built
from. Each request still reads the edition's id, status and `rendered_at` (a
small query): a newer `rendered_at` replaces the page, a status that is no
longer public hides it. The least recently read pages leave first when more
than `max_pages` are held.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import OrderedDict


class EditionPageCache:
    """Built pages by edition id, each for one `rendered_at`; the least recently read go first."""

    def __init__(self, max_pages: int = 64) -> None:
        if max_pages < 1:
            raise ValueError("the cache needs room for at least one page")
        self.max_pages = max_pages
        self._pages: OrderedDict[int, tuple[dt.datetime, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, edition_id: int, rendered_at: dt.datetime) -> bytes | None:
        """The page built from this rendering of the edition, if held."""
        with self._lock:
            held = self._pages.get(edition_id)
            if held is None or held[0] != rendered_at:
                return None
            self._pages.move_to_end(edition_id)
            return held[1]

    def put(self, edition_id: int, rendered_at: dt.datetime, page: bytes) -> None:
        """Keep the page built from this rendering (replacing one built from another)."""
        with self._lock:
            self._pages[edition_id] = (rendered_at, page)
            self._pages.move_to_end(edition_id)
            while len(self._pages) > self.max_pages:
                self._pages.popitem(last=False)

    def __len__(self) -> int:
        return len(self._pages)
