"""Fetching from a local HTTP server: retries, backoff, refusals and broken bodies."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from datetime import date

import httpx
import pytest

from newsletter.core.errors import IngestError, MalformedSourceError, SourceUnavailableError
from newsletter.ingest import Backoff, ParsedPapers, fetch_arxiv_listing, fetch_daily_papers
from newsletter.sample_data import generate_daily_papers
from tests.support.feed_server import FeedResponse, FeedServer, RecordedRequest

DAY = date(2026, 11, 27)
HF_PATH = "/api/daily_papers"


class RecordedSleeps:
    """A Backoff sleep that records the waits instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    with FeedServer() as server:
        yield server


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as http_client:
        yield http_client


@pytest.fixture
def sleeps() -> RecordedSleeps:
    return RecordedSleeps()


@pytest.fixture
def backoff(sleeps: RecordedSleeps) -> Backoff:
    return Backoff(base_seconds=0.5, max_seconds=30, sleep=sleeps, jitter=lambda: 0.5)


async def _fetch_hf(
    client: httpx.AsyncClient, server: FeedServer, backoff: Backoff, *, retries: int = 3
) -> ParsedPapers:
    return await fetch_daily_papers(
        client, api_url=server.url(HF_PATH), day=DAY, retries=retries, backoff=backoff
    )


async def test_hf_asks_for_the_day_and_says_who_is_asking(
    feed_server: FeedServer, client: httpx.AsyncClient, backoff: Backoff
) -> None:
    feed_server.serve(HF_PATH, FeedResponse.feed_file("hf_daily_papers.json"))

    parsed = await fetch_daily_papers(
        client, api_url=feed_server.url(HF_PATH), day=DAY, retries=0, backoff=backoff
    )

    assert [record.arxiv_id for record in parsed.records] == [
        "2611.18342",
        "2611.18407",
        "2611.18555",
    ]
    assert len(parsed.skipped) == 3
    (request,) = feed_server.requests(HF_PATH)
    assert request.query == {"date": "2026-11-27", "limit": "100"}
    assert request.headers["user-agent"].startswith("paper-newsletter/")


async def test_hf_reads_further_pages_while_pages_come_back_full(
    feed_server: FeedServer, client: httpx.AsyncClient, backoff: Backoff
) -> None:
    day = generate_daily_papers(DAY, 230, seed=7)

    def page(request: RecordedRequest) -> FeedResponse:
        number = int(request.query.get("p", "0"))
        return FeedResponse.json(day[number * 100 : (number + 1) * 100])

    feed_server.serve(HF_PATH, page)
    parsed = await _fetch_hf(client, feed_server, backoff)

    assert len(parsed.records) == 230
    assert [r.query.get("p") for r in feed_server.requests(HF_PATH)] == [None, "1", "2"]


async def test_hf_stops_when_the_server_ignores_the_page_parameter(
    feed_server: FeedServer, client: httpx.AsyncClient, backoff: Backoff
) -> None:
    feed_server.serve(HF_PATH, FeedResponse.json(generate_daily_papers(DAY, 100, seed=3)))
    parsed = await _fetch_hf(client, feed_server, backoff)
    assert len(parsed.records) == 100
    assert len(feed_server.requests(HF_PATH)) == 2


async def test_two_503s_then_success_is_a_success_after_backing_off(
    feed_server: FeedServer,
    client: httpx.AsyncClient,
    backoff: Backoff,
    sleeps: RecordedSleeps,
) -> None:
    feed_server.serve(
        HF_PATH,
        FeedResponse(503, b"busy"),
        FeedResponse(503, b"busy"),
        FeedResponse.feed_file("hf_daily_papers.json"),
    )
    parsed = await _fetch_hf(client, feed_server, backoff)

    assert len(parsed.records) == 3
    assert len(feed_server.requests(HF_PATH)) == 3
    # Doubling from 0.5 s, with the jitter pinned to its middle.
    assert sleeps.waits == [0.375, 0.75]


async def test_429_waits_as_long_as_retry_after_says(
    feed_server: FeedServer,
    client: httpx.AsyncClient,
    backoff: Backoff,
    sleeps: RecordedSleeps,
) -> None:
    feed_server.serve(
        HF_PATH,
        FeedResponse(429, b"slow down", headers={"Retry-After": "7"}),
        FeedResponse.feed_file("hf_daily_papers.json"),
    )
    parsed = await _fetch_hf(client, feed_server, backoff)
    assert len(parsed.records) == 3
    assert sleeps.waits == [7.0]


async def test_real_backoff_waits_are_short_when_the_base_is_small(
    feed_server: FeedServer, client: httpx.AsyncClient
) -> None:
    feed_server.serve(
        HF_PATH, FeedResponse(502, b""), FeedResponse.feed_file("hf_daily_papers.json")
    )
    parsed = await _fetch_hf(client, feed_server, Backoff(base_seconds=0.01))
    assert len(parsed.records) == 3


async def test_a_source_that_keeps_failing_is_unavailable_after_the_retries(
    feed_server: FeedServer,
    client: httpx.AsyncClient,
    backoff: Backoff,
    sleeps: RecordedSleeps,
) -> None:
    feed_server.serve(HF_PATH, FeedResponse(503, b"down"))
    with pytest.raises(SourceUnavailableError) as raised:
        await _fetch_hf(client, feed_server, backoff, retries=2)

    assert len(feed_server.requests(HF_PATH)) == 3
    assert len(sleeps.waits) == 2
    message = str(raised.value)
    assert "did not answer usefully after 3 attempts" in message
    assert "HTTP 503 Service Unavailable" in message
    assert "try again later" in message


async def test_a_refused_connection_is_retried_then_unavailable(
    client: httpx.AsyncClient, backoff: Backoff, sleeps: RecordedSleeps
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with pytest.raises(SourceUnavailableError, match="ConnectError"):
        await fetch_daily_papers(
            client,
            api_url=f"http://127.0.0.1:{closed_port}/api/daily_papers",
            day=DAY,
            retries=1,
            backoff=backoff,
        )
    assert len(sleeps.waits) == 1


@pytest.mark.parametrize(
    ("status", "explained"),
    [
        (400, "it rejected the date 2026-11-27 as invalid"),
        (404, "check NEWSLETTER_HF_API_URL"),
        (403, "check the source URL in the settings"),
    ],
)
async def test_other_4xx_answers_fail_at_once_with_a_reason(
    feed_server: FeedServer,
    client: httpx.AsyncClient,
    backoff: Backoff,
    status: int,
    explained: str,
) -> None:
    feed_server.serve(HF_PATH, FeedResponse(status, b'{"error": "nope"}'))
    with pytest.raises(IngestError) as raised:
        await _fetch_hf(client, feed_server, backoff)

    assert not isinstance(raised.value, SourceUnavailableError)
    assert f"HTTP {status}" in str(raised.value)
    assert explained in str(raised.value)
    assert len(feed_server.requests(HF_PATH)) == 1


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (FeedResponse.feed_file("hf_not_json.html", content_type="text/html"), "not valid JSON"),
        (FeedResponse.feed_file("hf_truncated.json"), "not valid JSON"),
        (FeedResponse.feed_file("hf_object.json"), "got a JSON object with error 'Invalid date'"),
        (FeedResponse(200, b"\xff\xfe\xfa"), "not valid JSON"),
    ],
)
async def test_a_broken_body_is_a_malformed_source(
    feed_server: FeedServer,
    client: httpx.AsyncClient,
    backoff: Backoff,
    response: FeedResponse,
    expected: str,
) -> None:
    feed_server.serve(HF_PATH, response)
    with pytest.raises(MalformedSourceError) as raised:
        await _fetch_hf(client, feed_server, backoff)
    assert expected in str(raised.value)
    assert feed_server.url(HF_PATH) in str(raised.value)


async def test_a_url_that_is_not_http_is_a_clear_error(
    client: httpx.AsyncClient, backoff: Backoff
) -> None:
    with pytest.raises(IngestError, match="is not a usable http"):
        await fetch_daily_papers(
            client, api_url="ftp://example.org/papers", day=DAY, retries=3, backoff=backoff
        )


async def test_arxiv_fetches_all_categories_in_one_listing(
    feed_server: FeedServer, client: httpx.AsyncClient, backoff: Backoff
) -> None:
    feed_server.serve(
        "/rss/cs.LG+cs.CL",
        FeedResponse(500, b""),
        FeedResponse.feed_file("arxiv_cs_lg_cs_cl.rss"),
    )
    parsed = await fetch_arxiv_listing(
        client,
        feed_url=feed_server.url("/rss/"),
        categories=["cs.LG", "cs.CL"],
        day=DAY,
        retries=2,
        backoff=backoff,
    )
    assert [record.arxiv_id for record in parsed.records] == [
        "2611.18342",
        "2611.18407",
        "2611.18555",
    ]
    assert len(feed_server.requests("/rss/cs.LG+cs.CL")) == 2


async def test_arxiv_unknown_category_and_non_rss_answers(
    feed_server: FeedServer, client: httpx.AsyncClient, backoff: Backoff
) -> None:
    feed_server.serve("/rss/cs.XX", FeedResponse(404, b"no such feed"))
    with pytest.raises(IngestError, match="check NEWSLETTER_ARXIV_CATEGORIES"):
        await fetch_arxiv_listing(
            client,
            feed_url=feed_server.url("/rss"),
            categories=["cs.XX"],
            day=DAY,
            retries=2,
            backoff=backoff,
        )
    feed_server.serve("/rss/cs.LG", FeedResponse.feed_file("not_rss.xml"))
    with pytest.raises(MalformedSourceError, match="XML but not an RSS feed"):
        await fetch_arxiv_listing(
            client,
            feed_url=feed_server.url("/rss"),
            categories=["cs.LG"],
            day=DAY,
            retries=2,
            backoff=backoff,
        )
