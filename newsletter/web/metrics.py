"""`/metrics` in the Prometheus text format, read from the database at each scrape.

Every figure is a count of rows (or a timestamp) the database holds, so any
number of server processes and workers report the same thing without a shared
metrics directory. The figures are gauges: erasing a reader deletes rows, so
even the sign-up count can go down.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Connection, Engine, func, select

from newsletter.core.clock import utc_now
from newsletter.models import Delivery, DeliveryStatus, Edition, FeedbackRecord, Paper
from subscribers.models import Subscriber

deliveries = Delivery.__table__  # type: ignore[attr-defined]
editions = Edition.__table__  # type: ignore[attr-defined]
feedback_events = FeedbackRecord.__table__  # type: ignore[attr-defined]
papers = Paper.__table__  # type: ignore[attr-defined]
subscribers = Subscriber.__table__  # type: ignore[attr-defined]

# The send rate is what went out over the last minute.
RATE_WINDOW = dt.timedelta(seconds=60)
# The latest editions get a series each; older ones would only grow the scrape.
EDITIONS_SHOWN = 30
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _timestamp(moment: dt.datetime | None) -> float:
    return moment.timestamp() if moment is not None else 0.0


class DatabaseCollector(Collector):
    """The list's figures, counted in the database when Prometheus scrapes."""

    def __init__(self, engine_of: Callable[[], Engine]) -> None:
        self._engine_of = engine_of

    def collect(self) -> Iterator[Metric]:
        """Every metric, from one connection."""
        with self._engine_of().connect() as connection:
            yield from self._deliveries(connection)
            yield from self._audience(connection)
            yield from self._feedback(connection)
            yield from self._editions(connection)

    def _deliveries(self, connection: Connection) -> Iterator[Metric]:
        by_status = GaugeMetricFamily(
            "newsletter_deliveries",
            "Deliveries in the ledger by status (test sends excluded).",
            labels=["status"],
        )
        counts = dict.fromkeys((status.value for status in DeliveryStatus), 0)
        rows = connection.execute(
            select(deliveries.c.status, func.count())
            .where(deliveries.c.is_test.is_(False))
            .group_by(deliveries.c.status)
        )
        for status, count in rows:
            counts[str(status)] = count
        for status, count in counts.items():
            by_status.add_metric([status], count)
        yield by_status
        recent = connection.execute(
            select(func.count()).where(
                deliveries.c.is_test.is_(False),
                deliveries.c.sent_at >= utc_now() - RATE_WINDOW,
            )
        ).scalar_one()
        yield GaugeMetricFamily(
            "newsletter_send_rate_per_second",
            "Digests accepted by the relay per second over the last minute.",
            value=recent / RATE_WINDOW.total_seconds(),
        )

    def _audience(self, connection: Connection) -> Iterator[Metric]:
        signups, confirmations, unsubscribes = connection.execute(
            select(
                func.count(),
                func.count(subscribers.c.confirmed_at),
                func.count(subscribers.c.unsubscribed_at),
            )
        ).one()
        yield GaugeMetricFamily(
            "newsletter_signups", "Readers who signed up (or were imported).", value=signups
        )
        yield GaugeMetricFamily(
            "newsletter_confirmations", "Readers who confirmed their address.", value=confirmations
        )
        yield GaugeMetricFamily(
            "newsletter_unsubscribes", "Readers who unsubscribed.", value=unsubscribes
        )
        by_status = GaugeMetricFamily(
            "newsletter_subscribers", "Readers by status.", labels=["status"]
        )
        for status, count in connection.execute(
            select(subscribers.c.status, func.count()).group_by(subscribers.c.status)
        ):
            by_status.add_metric([str(status)], count)
        yield by_status

    def _feedback(self, connection: Connection) -> Iterator[Metric]:
        counts = {"hard_bounce": 0, "soft_bounce": 0, "complaint": 0}
        for kind, count in connection.execute(
            select(feedback_events.c.kind, func.count()).group_by(feedback_events.c.kind)
        ):
            counts[str(kind)] = count
        by_kind = GaugeMetricFamily(
            "newsletter_feedback_events",
            "Bounces and complaints reported after sending, by kind.",
            labels=["kind"],
        )
        for kind, count in counts.items():
            by_kind.add_metric([kind], count)
        yield by_kind

    def _editions(self, connection: Connection) -> Iterator[Metric]:
        last_ingest = connection.execute(select(func.max(papers.c.updated_at))).scalar_one()
        yield GaugeMetricFamily(
            "newsletter_last_ingest_timestamp_seconds",
            "When papers were last stored by an ingest (Unix time; 0: never).",
            value=_timestamp(last_ingest),
        )
        finished = GaugeMetricFamily(
            "newsletter_edition_send_finished_timestamp_seconds",
            "When each recent edition's send finished (Unix time; 0: not finished).",
            labels=["edition", "status"],
        )
        rows = connection.execute(
            select(editions.c.date, editions.c.status, editions.c.send_finished_at)
            .order_by(editions.c.date.desc())
            .limit(EDITIONS_SHOWN)
        )
        for day, status, finished_at in rows:
            finished.add_metric([day.isoformat(), str(status)], _timestamp(finished_at))
        yield finished


def metrics_text(engine_of: Callable[[], Engine]) -> bytes:
    """The scrape's body: every metric, counted now."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(engine_of))
    return generate_latest(registry)
