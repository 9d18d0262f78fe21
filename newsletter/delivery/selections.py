"""Personal digests at send time: the selections a started edition carries, and their messages.

- `rank_readers` ranks every personal reader of the day in one pass
  (`editions.personal.edition_selections`), before the send starts: it reads and
  counts the corpus in its own transactions, which must not run inside the
  start's. Weekly readers whose weekday it is get a selection too: their
  "For you" of the week's papers and "Trending this week", both without what
  was already sent to them; weekly readers on other days are not in the audience.
- `store_selections`, in the transaction that queues the audience, writes each
  distinct "For you" list once into `selections`; `ledger.queue_audience` then
  points every queued row of those readers at theirs (`deliveries.selection_id`),
  numbering the rows selection by selection. The ledger then says
  which papers each delivery carried, and a resumed or crashed send reuses
  them: nothing is ranked again once the edition started.
- `PersonalDigests` is a worker's view of one edition's selections: the
  blocks rendered once (`render.render_blocks`), and one `CompiledDigest` per
  selection, compiled when its first reader's row comes up and shared by every
  reader of that selection (the last few kept). A row without a selection gets the edition's own
  trending digest, byte for byte as before.
"""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from sqlalchemy import Connection, Engine, select

from newsletter.core.settings import Settings
from newsletter.delivery.assemble import CompiledDigest
from newsletter.editions.personal import (
    ReaderSelection,
    edition_blocks,
    edition_selections,
    load_selections,
)
from newsletter.models import Selection
from newsletter.render import DigestBlocks

__all__ = [
    "PersonalDigests",
    "rank_readers",
    "store_selections",
]

selections = Selection.__table__  # type: ignore[attr-defined]

# Compiled digests a worker keeps (each holds its message's bytes, ~0.2 MB).
COMPILED_KEPT = 64
# Pieces of encoded blocks kept between compiles (why lines are the many distinct ones).
QP_CACHE_MAX_PIECES = 50_000


def rank_readers(settings: Settings, engine: Engine, *, day: dt.date) -> dict[int, ReaderSelection]:
    """Each reader's selection of the day (daily personal readers, weekly readers of the day).

    Readers absent get the edition's trending digest.
    """
    return edition_selections(settings, engine, day=day)


def store_selections(
    connection: Connection,
    *,
    edition_id: int,
    picks: Mapping[int, ReaderSelection],
    now: dt.datetime,
) -> dict[int, int]:
    """Store the edition's distinct selections once each; returns each reader's selection id.

    Given to `ledger.start_sending`, which queues the rows with them. Readers
    absent from `picks` get no selection: the trending digest.
    """
    by_fingerprint: dict[str, ReaderSelection] = {}
    readers: dict[str, list[int]] = {}
    for subscriber_id, chosen in picks.items():
        fingerprint = chosen.fingerprint()
        by_fingerprint.setdefault(fingerprint, chosen)
        readers.setdefault(fingerprint, []).append(subscriber_id)
    if not by_fingerprint:
        return {}
    connection.execute(
        selections.insert(),
        [
            {
                "edition_id": edition_id,
                "fingerprint": fingerprint,
                "picks": [
                    {"arxiv_id": p.arxiv_id, "score": round(p.score, 6), "why": p.why}
                    for p in chosen.picks
                ],
                "for_you": chosen.for_you,
                "trending": None if chosen.week_trending is None else list(chosen.week_trending),
                "created_at": now,
            }
            for fingerprint, chosen in by_fingerprint.items()
        ],
    )
    ids: dict[str, int] = dict(
        connection.execute(
            select(selections.c.fingerprint, selections.c.id).where(
                selections.c.edition_id == edition_id
            )
        ).all()
    )
    return {
        subscriber_id: ids[fingerprint]
        for fingerprint, subscriber_ids in readers.items()
        for subscriber_id in subscriber_ids
    }


@dataclass
class PersonalDigests:
    """One edition's selections, and a compiled digest per selection made on first use."""

    blocks: DigestBlocks
    selections: dict[int, ReaderSelection]
    compile_digest: Callable[[DigestBlocks, ReaderSelection], CompiledDigest]
    # The most recently used compiled digests (rows come selection by selection,
    # see `ledger.queue_audience`), so memory stays flat however many selections.
    compiled: OrderedDict[int, CompiledDigest] = field(default_factory=OrderedDict)

    @classmethod
    def load(
        cls,
        settings: Settings,
        engine: Engine,
        *,
        edition_id: int,
        clock: Callable[[], dt.datetime],
    ) -> PersonalDigests | None:
        """The edition's personal digests, or None when no row of it has a selection."""
        with engine.connect() as connection:
            stored = load_selections(connection, edition_id=edition_id)
        if not stored:
            return None
        picked = {arxiv_id for chosen in stored.values() for arxiv_id in chosen.papers()}
        blocks = edition_blocks(settings, engine, edition_id=edition_id, extra_papers=picked)

        # Encoded blocks, shared by every selection's compile (a few MB at most).
        qp_cache: dict[str, bytes] = {}

        def compile_digest(blocks: DigestBlocks, chosen: ReaderSelection) -> CompiledDigest:
            digest = chosen.assemble(blocks)
            if len(qp_cache) > QP_CACHE_MAX_PIECES:
                qp_cache.clear()
            return CompiledDigest.compile(
                settings,
                subject=digest.subject,
                html=digest.html,
                text=digest.text,
                edition_date=blocks.edition_date,
                link_marker=digest.link_marker,
                clock=clock,
                feedback_papers=digest.feedback_papers,
                cut=digest.cut,
                qp_cache=qp_cache,
            )

        return cls(blocks, stored, compile_digest)

    def digest(self, selection_id: int) -> CompiledDigest:
        """The compiled digest of a selection (compiled once, then shared)."""
        compiled = self.compiled.get(selection_id)
        if compiled is None:
            compiled = self.compile_digest(self.blocks, self.selections[selection_id])
            self.compiled[selection_id] = compiled
            if len(self.compiled) > COMPILED_KEPT:
                self.compiled.popitem(last=False)
        else:
            self.compiled.move_to_end(selection_id)
        return compiled
