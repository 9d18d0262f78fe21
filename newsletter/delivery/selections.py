"""Personal digests at send time: the selections a started edition carries, and their messages.

- `rank_readers` gives every personal reader's selection of the day
  (`editions.personal.edition_selections`), a batch of readers at a time:
  before the send's start transaction it counts the corpus (a write of its
  own) and ranks every batch into a temporary file, which the start then
  reads back batch by batch. Weekly readers whose weekday it is get a selection too:
  their "For you" of the week's papers and "Trending this week", both without
  what was already sent to them; weekly readers on other days are not in the
  audience.
- `store_selections`, in the transaction that queues the audience, takes the
  batches one at a time: it writes each batch's distinct selections once
  (insert if absent: a selection met in an earlier batch stays the one row)
  and yields whose is which for that batch; `ledger.start_sending` keeps that
  in a temporary table and points every queued row of those readers at theirs
  (`deliveries.selection_id`), numbering the rows selection by selection. So
  the start holds one batch of readers, however many there are. The ledger
  then says which papers each delivery carried, and a resumed or crashed send
  reuses them: nothing is ranked again once the edition started.
- `PersonalDigests` is a worker's view of one edition's selections: the
  blocks rendered once (`render.render_blocks`, for the papers of one streamed
  pass over the selections), the selections its claimed rows point at, read
  when first met, and one `CompiledDigest` per selection, compiled when its
  first reader's row comes up and shared by every reader of that selection
  (the last few of each kept). A row without a selection gets the edition's
  own trending digest, byte for byte as before.
"""

from __future__ import annotations

import datetime as dt
import pickle
import tempfile
import zlib
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from sqlalchemy import Connection, Engine, select

from newsletter.core.db import upsert_insert
from newsletter.core.dkim import DkimSigner
from newsletter.core.memory import cycle_collection_paused
from newsletter.core.settings import Settings
from newsletter.delivery.assemble import CompiledDigest, EncodingCache
from newsletter.editions.personal import (
    ReaderSelection,
    SelectionBatch,
    edition_blocks,
    load_selections,
    ranked_selections,
    selection_papers,
)
from newsletter.models import Selection
from newsletter.render import DigestBlocks

__all__ = [
    "PersonalDigests",
    "PreparedSelections",
    "rank_readers",
    "spool_record",
    "spooled",
    "spooled_records",
    "store_selection_batch",
    "store_selections",
]

selections = Selection.__table__  # type: ignore[attr-defined]

# Compiled digests a worker keeps (each holds its message's bytes, ~0.2 MB).
COMPILED_KEPT = 64
# Selections a worker keeps read (a few KB each): more than a claimed batch meets.
SELECTIONS_KEPT = 4096
# Pieces of encoded blocks kept between compiles (why lines are the many distinct ones).
QP_CACHE_MAX_PIECES = 50_000


def rank_readers(
    settings: Settings, engine: Engine, *, day: dt.date, processes: int = 1
) -> Iterator[PreparedSelections]:
    """Each reader's selection of the day (daily personal readers, weekly readers of the day).

    Every batch is ranked now, before the start's transaction, prepared as
    rows (`PreparedSelections`) and kept in a temporary file as it comes
    (`_Spool`); the returned iterator reads them back one batch at a time for
    `store_selections`. So memory holds one batch
    however many readers there are, and the start holds its write lock only
    while it stores and queues: ranking inside it kept every other writer of a
    SQLite database (sign-ups, another edition's worker) waiting for the
    whole ranking, 26 s at 100,000 readers. Readers absent get the trending
    digest.

    With `processes` above one the daily readers' batches are ranked, prepared
    and compressed in that many forked processes (`ranked_selections`): only
    for a caller that has started no thread (the CLI's send).
    """
    return spooled_records(
        ranked_selections(settings, engine, day=day, then=spool_record, processes=processes)
    )


def spooled(batches: Iterable[SelectionBatch]) -> Iterator[PreparedSelections]:
    """Take every batch now, prepared for storing, into a temporary file; then read them back."""
    return spooled_records(map(spool_record, batches))


def spool_record(batch: SelectionBatch) -> bytes:
    """A batch as the spool keeps it: prepared for storing, pickled and compressed."""
    with cycle_collection_paused():  # a batch makes ~100,000 small objects, no cycles
        prepared = PreparedSelections.of(batch)
    return zlib.compress(pickle.dumps(prepared, protocol=pickle.HIGHEST_PROTOCOL), 1)


def spooled_records(records: Iterable[bytes]) -> Iterator[PreparedSelections]:
    """`spooled` for batches already made into records (`spool_record`), as children make them."""
    spool = _Spool()
    try:
        for record in records:
            spool.write(record)
    except BaseException:
        spool.close()
        raise
    return spool.read()


@dataclass(frozen=True, slots=True)
class PreparedSelections:
    """One batch's distinct selections as rows of `selections`, and whose is which.

    Made while ranking, outside the start's transaction: fingerprints and the
    rows' values are most of storing's CPU, and plain values (no objects per
    pick) are quick to write to and read from the spool.
    """

    rows: list[dict[str, object]]  # fingerprint, picks, for_you, trending
    readers: list[tuple[int, str]]  # (subscriber id, their selection's fingerprint)

    @classmethod
    def of(cls, batch: Mapping[int, ReaderSelection]) -> PreparedSelections:
        rows: dict[str, dict[str, object]] = {}
        readers: list[tuple[int, str]] = []
        for subscriber_id, chosen in batch.items():
            fingerprint = chosen.fingerprint()
            readers.append((subscriber_id, fingerprint))
            if fingerprint not in rows:
                rows[fingerprint] = {
                    "fingerprint": fingerprint,
                    "picks": [
                        {"arxiv_id": p.arxiv_id, "score": round(p.score, 6), "why": p.why}
                        for p in chosen.picks
                    ],
                    "for_you": chosen.for_you,
                    "trending": (
                        None if chosen.week_trending is None else list(chosen.week_trending)
                    ),
                }
        return cls(list(rows.values()), readers)


class _Spool:
    """Prepared batches in an unnamed temporary file, compressed: written, then read once.

    The file is this process's own (unlinked at creation), so pickle is safe
    here; the why lines and paper ids repeat from reader to reader, so each
    batch compresses several times over.
    """

    def __init__(self) -> None:
        # Open across `write` and `read`, which closes it (or `close`, on failure).
        self._file = tempfile.TemporaryFile()  # noqa: SIM115

    def write(self, record: bytes) -> None:
        """A batch's record (`spool_record`), written as it comes."""
        self._file.write(len(record).to_bytes(8, "big"))
        self._file.write(record)

    def read(self) -> Iterator[PreparedSelections]:
        self._file.seek(0)
        with self._file:
            while header := self._file.read(8):
                batch: PreparedSelections = pickle.loads(
                    zlib.decompress(self._file.read(int.from_bytes(header, "big")))
                )
                yield batch

    def close(self) -> None:
        self._file.close()


def store_selections(
    connection: Connection,
    *,
    edition_id: int,
    picks: Iterable[PreparedSelections],
    now: dt.datetime,
) -> Iterator[dict[int, int]]:
    """Store each batch's distinct selections (once per edition); yield its readers' selection ids.

    Given to `ledger.start_sending`, which queues the rows with them. Readers
    absent from every batch get no selection: the trending digest.
    """
    for batch in picks:
        with cycle_collection_paused():  # a batch makes ~100,000 small objects, no cycles
            ids = store_selection_batch(connection, edition_id=edition_id, batch=batch, now=now)
        yield ids


def store_selection_batch(
    connection: Connection, *, edition_id: int, batch: PreparedSelections, now: dt.datetime
) -> dict[int, int]:
    """Store one batch's selections not stored yet; each of its readers' selection id."""
    if not batch.rows:
        return {}
    # An earlier batch may have stored the same selection: the unique
    # (edition, fingerprint) keeps that row, and its id is read back below.
    statement = upsert_insert(connection.dialect.name, selections).on_conflict_do_nothing(
        index_elements=["edition_id", "fingerprint"]
    )
    connection.execute(
        statement, [{**row, "edition_id": edition_id, "created_at": now} for row in batch.rows]
    )
    ids: dict[str, int] = {}
    fingerprints = sorted(str(row["fingerprint"]) for row in batch.rows)
    for start in range(0, len(fingerprints), 900):
        ids.update(
            connection.execute(
                select(selections.c.fingerprint, selections.c.id).where(
                    selections.c.edition_id == edition_id,
                    selections.c.fingerprint.in_(fingerprints[start : start + 900]),
                )
            ).all()
        )
    return {subscriber_id: ids[fingerprint] for subscriber_id, fingerprint in batch.readers}


@dataclass
class PersonalDigests:
    """One edition's personal digests: the blocks, and selections and compiled digests on first use.

    Rows come selection by selection (`ledger.queue_audience`), so the most
    recently met selections and compiled digests are all a worker keeps: its
    memory stays flat however many selections the edition has.
    """

    blocks: DigestBlocks
    read_selections: Callable[[Collection[int]], dict[int, ReaderSelection]]
    compile_digest: Callable[[DigestBlocks, ReaderSelection], CompiledDigest]
    selections: OrderedDict[int, ReaderSelection] = field(default_factory=OrderedDict)
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
            picked = selection_papers(connection, edition_id=edition_id)
        if picked is None:
            return None
        blocks = edition_blocks(settings, engine, edition_id=edition_id, extra_papers=picked)

        def read_selections(selection_ids: Collection[int]) -> dict[int, ReaderSelection]:
            with engine.connect() as connection:
                return load_selections(
                    connection, edition_id=edition_id, selection_ids=selection_ids
                )

        # Encoded blocks and line layouts, shared by every selection's compile
        # (a few MB at most).
        cache = EncodingCache(limit=QP_CACHE_MAX_PIECES)
        signer = DkimSigner.from_settings(settings)  # its key read once, not per selection

        def compile_digest(blocks: DigestBlocks, chosen: ReaderSelection) -> CompiledDigest:
            digest = chosen.assemble(blocks)
            return CompiledDigest.compile_units(
                settings,
                subject=digest.subject,
                html_units=digest.html_units,
                text_units=digest.text_units,
                edition_date=blocks.edition_date,
                link_marker=digest.link_marker,
                clock=clock,
                feedback_papers=digest.feedback_papers,
                cache=cache,
                signer=signer,
            )

        return cls(blocks, read_selections, compile_digest)

    def prefetch(self, selection_ids: Iterable[int]) -> None:
        """Read the selections of a claimed batch not in hand, in one query."""
        missing = set(selection_ids) - self.selections.keys()
        if missing:
            for selection_id, chosen in sorted(self.read_selections(missing).items()):
                self._keep(selection_id, chosen)

    def selection(self, selection_id: int) -> ReaderSelection:
        """A stored selection of the edition (read when first met, or met again once dropped)."""
        chosen = self.selections.get(selection_id)
        if chosen is None:
            chosen = self.read_selections([selection_id])[selection_id]
            self._keep(selection_id, chosen)
        else:
            self.selections.move_to_end(selection_id)
        return chosen

    def _keep(self, selection_id: int, chosen: ReaderSelection) -> None:
        self.selections[selection_id] = chosen
        if len(self.selections) > SELECTIONS_KEPT:
            self.selections.popitem(last=False)

    def digest(self, selection_id: int) -> CompiledDigest:
        """The compiled digest of a selection (compiled once, then shared)."""
        compiled = self.compiled.get(selection_id)
        if compiled is None:
            compiled = self.compile_digest(self.blocks, self.selection(selection_id))
            self.compiled[selection_id] = compiled
            if len(self.compiled) > COMPILED_KEPT:
                self.compiled.popitem(last=False)
        else:
            self.compiled.move_to_end(selection_id)
        return compiled
