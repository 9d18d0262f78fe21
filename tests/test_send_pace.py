"""The shared pace and breaker, by their rules with an injected clock, and on one database."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import Engine, select

from newsletter.delivery import ledger
from newsletter.delivery.breaker import (
    EARLY_TRIP_ATTEMPTS,
    BreakerState,
    pause_sending_edition,
    record_attempts,
    send_breakers,
)
from newsletter.delivery.pacing import (
    PaceRates,
    PaceState,
    claim_paced,
    give_back,
    plan_grant,
)
from newsletter.delivery.worker import resume_edition, start_edition
from newsletter.models import EditionStatus
from tests.support.sending import DAY, edition_status, make_edition, seed_subscribers

T0 = dt.datetime(2026, 3, 2, 6, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    """The injected clock: T0 plus some seconds."""
    return T0 + dt.timedelta(seconds=seconds)


# ---- the token buckets ----------------------------------------------------------------------


def test_a_full_bucket_grants_its_burst_then_tells_when_the_next_share_comes() -> None:
    rates = PaceRates.from_limits(per_second=20, per_hour=0)
    assert rates.second is not None
    assert (rates.second.capacity, rates.second.chunk) == (5.0, 2)

    granted, wait, state = plan_grant(rates, PaceState(), want=500, now=at(0))
    assert (granted, wait) == (5, 0.0)  # a quarter of a second's worth at once

    granted, wait, state = plan_grant(rates, state, want=500, now=at(0))
    # Nothing below a share of two tokens: come back in 2 / 20 s.
    assert granted == 0 and wait == pytest.approx(0.1)

    granted, wait, state = plan_grant(rates, state, want=500, now=at(0.05))
    assert granted == 0 and wait == pytest.approx(0.05)

    granted, _, state = plan_grant(rates, state, want=500, now=at(0.1))
    assert granted == 2

    # A long pause refills only up to the burst.
    granted, _, state = plan_grant(rates, state, want=500, now=at(60))
    assert granted == 5


def test_a_worker_wanting_less_than_a_share_gets_it_as_soon_as_it_is_there() -> None:
    rates = PaceRates.from_limits(per_second=20, per_hour=0)
    _, _, empty = plan_grant(rates, PaceState(), want=5, now=at(0))
    granted, wait, _ = plan_grant(rates, empty, want=1, now=at(0))
    assert granted == 0 and wait == pytest.approx(0.05)
    granted, _, _ = plan_grant(rates, empty, want=1, now=at(0.05))
    assert granted == 1


def test_the_hourly_bucket_holds_a_minute_and_both_limits_apply() -> None:
    hourly = PaceRates.from_limits(per_second=0, per_hour=3600)
    granted, _, state = plan_grant(hourly, PaceState(), want=500, now=at(0))
    assert granted == 60
    granted, wait, _ = plan_grant(hourly, state, want=500, now=at(0))
    assert granted == 0 and wait == pytest.approx(1.0)

    both = PaceRates.from_limits(per_second=100, per_hour=3600)
    granted, _, state = plan_grant(both, PaceState(), want=500, now=at(0))
    assert granted == 25  # the per-second burst is the smaller
    granted, _, state = plan_grant(both, state, want=500, now=at(1))
    # The second bucket is full again, the hour has 35 + 1 left.
    assert granted == 25
    granted, _, state = plan_grant(both, state, want=500, now=at(2))
    assert granted == 12
    assert state.hour_tokens == pytest.approx(0.0)


def test_unused_tokens_go_back_and_a_clock_behind_refills_nothing() -> None:
    rates = PaceRates.from_limits(per_second=20, per_hour=0)
    granted, _, state = plan_grant(rates, PaceState(), want=500, now=at(10))
    assert granted == 5
    assert give_back(rates, state, 3).second_tokens == pytest.approx(3.0)
    assert give_back(rates, state, 50).second_tokens == pytest.approx(5.0)  # never above the burst

    # Another machine's clock a second behind: no refill, and the count keeps the later time.
    granted, wait, behind = plan_grant(rates, state, want=500, now=at(9))
    assert granted == 0 and wait == pytest.approx(0.1)
    assert behind.refilled_at == at(10)


def test_no_limit_grants_everything_and_touches_nothing() -> None:
    rates = PaceRates.from_limits(per_second=0, per_hour=0)
    assert rates.unlimited
    assert plan_grant(rates, PaceState(), want=500, now=at(0)) == (500, 0.0, PaceState())


def test_claims_of_two_workers_share_one_pace_in_the_database(engine: Engine) -> None:
    seed_subscribers(engine, 12)
    make_edition(engine)
    start_edition(engine, DAY)
    rates = PaceRates.from_limits(per_second=20, per_hour=0)

    def claim(worker: str, now: dt.datetime) -> tuple[list[ledger.ClaimedDelivery] | None, float]:
        with engine.begin() as connection:
            return claim_paced(
                connection,
                rates,
                want=500,
                now=now,
                claim=lambda limit: ledger.claim_batch(
                    connection,
                    edition_id=None,
                    worker_id=worker,
                    limit=limit,
                    now=now,
                    lease_seconds=60,
                ),
            )

    first, _ = claim("a", at(0))
    assert first is not None and len(first) == 5
    second, wait = claim("b", at(0))  # another worker, same instant: the burst is gone
    assert second is None and wait == pytest.approx(0.1)
    third, _ = claim("b", at(0.1))
    assert third is not None and len(third) == 2
    rest, _ = claim("a", at(10))  # a refilled burst claims the last five
    assert rest is not None and len(rest) == 5
    # Nothing left to claim: the tokens taken for it go back, so asking again finds them.
    assert claim("b", at(20))[0] == []
    assert claim("b", at(20))[0] == []


# ---- the breaker ----------------------------------------------------------------------------


def test_the_window_forgets_its_older_half_and_trips_on_the_rate() -> None:
    state, reason = BreakerState().after([True] * 4 + [False] * 6, window=10, threshold=0.5)
    # Full at 40 % failures: kept as half a window in the same proportion.
    assert reason is None and state == BreakerState(5, 2, 0)
    state, reason = state.after([True, True, True, True, False], window=10, threshold=0.5)
    assert reason == "failure rate 60% over the last 10 attempts passed 50%"
    assert state.attempts == 10 and state.failures == 6


def test_a_streak_of_failures_trips_early_and_a_success_ends_it() -> None:
    window = 200
    almost = [True] * (EARLY_TRIP_ATTEMPTS - 1)
    state, reason = BreakerState().after([*almost, False, *almost], window=window, threshold=0.5)
    assert reason is None and state.failing_in_a_row == EARLY_TRIP_ATTEMPTS - 1
    state, reason = state.after([True], window=window, threshold=0.5)
    assert reason == f"the last {EARLY_TRIP_ATTEMPTS} attempts all failed"


def test_attempts_of_two_workers_add_up_and_trip_the_edition_once(engine: Engine) -> None:
    seed_subscribers(engine, 3)
    edition_id = make_edition(engine)
    start_edition(engine, DAY)

    def record(failed: list[bool], last_error: str) -> tuple[bool, str | None]:
        with engine.begin() as connection:
            check = record_attempts(
                connection,
                edition_id=edition_id,
                failed_attempts=failed,
                window=200,
                threshold=0.5,
                last_error=last_error,
                now=at(0),
            )
        return check.sending, check.tripped

    def pause(reason: str) -> bool:
        with engine.begin() as connection:
            return pause_sending_edition(connection, edition_id=edition_id, reason=reason)

    def counters() -> list[tuple[int, int]]:
        with engine.connect() as connection:
            rows = connection.execute(
                select(send_breakers.c.attempts, send_breakers.c.failing_in_a_row)
            ).all()
        return [(row.attempts, row.failing_in_a_row) for row in rows]

    assert record([True] * 6, "451 4.3.0 busy (worker a)") == (True, None)
    _, tripped = record([True] * 4, "451 4.3.0 busy (worker b)")
    assert tripped is not None
    assert tripped == (
        f"the last {EARLY_TRIP_ATTEMPTS} attempts all failed; last error: 451 4.3.0 busy (worker b)"
    )
    assert counters() == [(0, 0)]  # one worker sees the trip; the counters start again
    assert pause(tripped)  # worker b pauses the edition
    assert not pause("the last 10 attempts all failed (worker a)")  # nobody else can
    assert edition_status(engine) == (EditionStatus.PAUSED, tripped)
    # Worker a's later failures find the edition paused: nothing counted, no trip.
    assert record([True] * 20, "451 4.3.0 busy (worker a)") == (False, None)
    assert counters() == [(0, 0)]

    resume_edition(engine, DAY)  # a fresh window
    assert counters() == []
    assert record([True] * 3, "451 4.3.0 busy") == (True, None)
    assert counters() == [(3, 3)]
