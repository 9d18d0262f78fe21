"""Prepared DATA bytes, PIPELINING and SIZE: what a real SMTP server receives.

The differential test sends generated digests through the pool (prepared
bytes, pipelined or not) and through aiosmtplib's own `sendmail` (which
normalises and dot-stuffs every message itself), and checks that the server
received, once it removed the stuffing, exactly the assembled message both
times, and byte for byte the `email`-package reference (`build_message`,
given the same boundary). One header may differ: a display name that needs
encoded-words, which the two write differently and read alike.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime
from email.message import MIMEPart
from email.policy import SMTP
from functools import partial
from importlib.metadata import version

import aiosmtplib
import pytest
from aiosmtplib.protocol import SMTPProtocol
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from newsletter.core.db import create_db_engine, upgrade_schema
from newsletter.core.mime import normalised_body, qp_encode
from newsletter.core.settings import Settings, load_settings
from newsletter.core.wire import PreparedMessage, prepare_message, prepared_value, stuff
from newsletter.delivery.assemble import CompiledDigest, Recipient, build_message
from newsletter.delivery.connection import SmtpStage
from newsletter.delivery.ledger import OutcomeKind
from newsletter.delivery.transport import NextMessage, SmtpPool, SmtpReply
from newsletter.delivery.worker import Blame, blame_reply, classify_reply, send_edition
from newsletter.models import DeliveryStatus
from newsletter.values import PersonalField
from tests.support.sending import DAY, ledger_rows, make_edition, seed_subscribers
from tests.support.smtp_server import Hold, RecordingSmtpServer
from tests.test_assemble import displayed_address, make_settings

# The SMTP conversation runs on uvloop (the commands') and on asyncio's own loop.
pytestmark = pytest.mark.both_event_loops

EDITION_DATE = date(2026, 1, 5)
SENT_AT = datetime(2026, 1, 5, 7, 30, 15, tzinfo=UTC)
LINK_MARKER = "0123456789abcdef0123456789abcdef"
UNSUBSCRIBE = PersonalField.UNSUBSCRIBE_URL.placeholder(LINK_MARKER)
PREFERENCES = PersonalField.PREFERENCES_URL.placeholder(LINK_MARKER)
WAIT_SECONDS = 10.0


def wire_settings(server: RecordingSmtpServer) -> Settings:
    """Message settings pointing at one server, one connection."""
    return make_settings(smtp_host="127.0.0.1", smtp_port=server.port, smtp_concurrency=1)


def compile_digest(
    settings: Settings, *, html: str, text: str, kind: type[CompiledDigest] = CompiledDigest
) -> CompiledDigest:
    return kind.compile(
        settings,
        subject="Daily ML Papers",
        html=html,
        text=text,
        edition_date=EDITION_DATE,
        link_marker=LINK_MARKER,
        clock=lambda: SENT_AT,
    )


def reader(
    name: str | None = "Ada", *, email: str = "ada@example.org", key: str = "k" * 22
) -> Recipient:
    return Recipient(email, name, key, "<20260105.1.digest@news.example.org>")


def unstuffed(data: bytes) -> bytes:
    """What a server keeps of DATA bytes: without the end line and the stuffing dots."""
    assert data.endswith(b"\r\n.\r\n")
    return re.sub(rb"(?m)^\.", b"", data[:-3])


async def send_through_pool(
    settings: Settings, digest: CompiledDigest, people: list[Recipient], *, ahead: bool = False
) -> list[SmtpReply]:
    """Each person's message on lane 0, in order; `ahead`: each offers the next as it goes."""
    pool = SmtpPool(settings)
    messages = [digest.prepare(person) for person in people]

    def following(index: int) -> NextMessage | None:
        if not ahead or index + 1 >= len(people):
            return None
        return NextMessage(digest.envelope_from, people[index + 1].email, messages[index + 1])

    try:
        return [
            await pool.send(
                0,
                digest.envelope_from,
                person.email,
                messages[index],
                next_message=partial(following, index),
            )
            for index, person in enumerate(people)
        ]
    finally:
        await pool.aclose()


# --- aiosmtplib's internals ---------------------------------------------------


async def test_the_aiosmtplib_internals_the_sender_relies_on_are_still_there(
    smtp_server: RecordingSmtpServer,
) -> None:
    # connection._PipelinedProtocol reads replies to pipelined commands through
    # these private parts of aiosmtplib; pyproject pins the versions they were
    # checked against. If this fails, read connection.py before widening the pin.
    major, minor = (int(part) for part in version("aiosmtplib").split(".")[:2])
    assert (major, minor) == (5, 1), version("aiosmtplib")
    protocol = SMTPProtocol(loop=asyncio.get_running_loop())
    assert isinstance(protocol._buffer, bytearray)
    protocol._buffer.extend(b"250-first\r\n250 second\r\n354 go\r\n4")
    assert protocol._read_response_from_buffer() == (250, "first\nsecond")
    assert protocol._read_response_from_buffer() == (354, "go")
    assert protocol._read_response_from_buffer() is None
    assert protocol._buffer == bytearray(b"4")
    for method in ("data_received", "eof_received", "connection_lost", "write"):
        assert callable(getattr(SMTPProtocol, method))
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=smtp_server.port, start_tls=False)
    await client.connect()
    try:
        assert isinstance(client.protocol, SMTPProtocol)
        assert isinstance(client.protocol._command_lock, asyncio.Lock)
        assert client.is_ehlo_or_helo_needed
        await client.ehlo()
        assert "size" in client.esmtp_extensions
    finally:
        client.close()


# --- the differential test ------------------------------------------------------

_free_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=90)
_SPECIAL_LINES = [".", "..", "...", ".hidden", ". ", "", " ", "\t", "From me", "=3D", "a\rb"]
_SPECIAL_LINES += ["x" * 300, ".é" * 70, "é" * 100, "日本語のテキスト", "😀 emoji", "end\r"]
# Lines around where quoted-printable breaks them: 75 to 77 characters, an
# escape across the break, a space or tab at the end.
_SPECIAL_LINES += ["y" * 74 + " ", "y" * 75 + " ", "y" * 76 + "\t", "z" * 73 + "==", "z" * 74 + "é"]
# Characters other writers take for line breaks besides CR and LF.
_SPECIAL_LINES += ["\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"]
_line = st.one_of(st.sampled_from(_SPECIAL_LINES), _free_text)
_line_end = st.sampled_from(["\n", "\r\n", "\r"])
_body = st.builds(
    lambda lines, tail: "".join(line + end for line, end in lines) + tail,
    st.lists(st.tuples(_line, _line_end), max_size=12),
    st.sampled_from(["", "\n", "\n\n", "\r\n\r\n", ".", ".\n", "\n.\n", " ", "x" * 80]),
)


@st.composite
def _digest_parts(draw: st.DrawFn) -> tuple[str, str]:
    """HTML and text with both personal placeholders at generated places (line start or not)."""
    html = draw(_body) + UNSUBSCRIBE + draw(_body) + PREFERENCES + draw(_body)
    text = draw(_body) + PREFERENCES + draw(_body) + UNSUBSCRIBE + draw(_body)
    return html, text


_names = st.sampled_from([None, "Ada", "Dr. A. Lovelace", ".dot first", "Zoë Ægir", "山田太郎"])
# Base URLs whose links quoted-printable writes as they are, and ones it must escape.
_base_urls = st.sampled_from(["https://news.example.org", "https://news.example.org/list=daily"])


@pytest.fixture(scope="module", params=[True, False], ids=["pipelining", "one-by-one"])
def wire_server(request: pytest.FixtureRequest) -> Iterator[RecordingSmtpServer]:
    with RecordingSmtpServer(pipelining=request.param) as server:
        yield server


def boundary_of(message: bytes) -> str:
    found = re.search(rb'boundary="([^"]+)"', message)
    assert found is not None
    return found.group(1).decode("ascii")


def reference_bytes(
    settings: Settings, *, html: str, text: str, person: Recipient, like: bytes
) -> bytes:
    """The `email`-package build of the digest for `person`, with the boundary `like` has."""
    return build_message(
        settings,
        subject="Daily ML Papers",
        html=html,
        text=text,
        edition_date=EDITION_DATE,
        link_marker=LINK_MARKER,
        recipient=person,
        sent_at=SENT_AT,
        boundary=boundary_of(like),
    ).as_bytes()


def without_to(message: bytes) -> bytes:
    """The message with its To header (and its folded lines) left out."""
    return re.sub(rb"(?m)^To:.*\r\n(?:[ \t].*\r\n)*", b"", message)


@hypothesis_settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(parts=_digest_parts(), name=_names, base_url=_base_urls)
def test_what_the_server_receives_is_the_message_byte_for_byte(
    wire_server: RecordingSmtpServer, parts: tuple[str, str], name: str | None, base_url: str
) -> None:
    html, text = parts
    settings = wire_settings(wire_server).model_copy(update={"base_url": base_url})
    digest = compile_digest(settings, html=html, text=text)
    person = reader(name)
    assembled = digest.assemble(person)
    prepared = digest.prepare(person)
    assert prepared.size == len(assembled)
    assert unstuffed(prepared.data) == assembled
    before = len(wire_server.messages)

    async def both_paths() -> list[SmtpReply]:
        replies = await send_through_pool(settings, digest, [person])
        # The old path: aiosmtplib normalises and stuffs the assembled bytes itself.
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=wire_server.port) as client:
            await client.sendmail(digest.envelope_from, [person.email], assembled)
        return replies

    assert asyncio.run(both_paths()) == [SmtpReply(250, "OK", SmtpStage.DATA)]
    assert wire_server.handler.wait_for_messages(before + 2, WAIT_SECONDS)
    ours, theirs = wire_server.messages[before : before + 2]
    assert ours.raw == assembled
    assert theirs.raw == assembled
    reference = reference_bytes(settings, html=html, text=text, person=person, like=assembled)
    if name is None or name.isascii():
        assert ours.raw == reference
    else:
        # A name in encoded-words: the email package picks Q or base64 by length,
        # the header writer always base64 (newsletter.core.headers); the rest of
        # the message is the same byte for byte, and the name reads the same.
        assert without_to(ours.raw) == without_to(reference)
        assert displayed_address(ours.raw) == displayed_address(reference)


@pytest.mark.parametrize("base_url", ["https://news.example.org", "https://x.example/?a=1&b=2 "])
def test_links_break_where_the_email_package_breaks_them_at_every_column(base_url: str) -> None:
    # A link's escapes ("=3D", "&amp;"'s) and a final space land on every column
    # of a long line once, in both parts: the layout must break around them as the
    # reference does, whatever the column.
    settings = make_settings(base_url=base_url)
    person = reader()
    for column in range(160):
        html = "h" * column + UNSUBSCRIBE + "=" * (column % 3) + PREFERENCES + "\n"
        text = "t" * column + PREFERENCES + " " + "é" * (column % 5) + UNSUBSCRIBE
        digest = compile_digest(settings, html=html, text=text)
        assembled = digest.assemble(person)
        assert unstuffed(digest.prepare(person).data) == assembled
        reference = reference_bytes(settings, html=html, text=text, person=person, like=assembled)
        assert assembled == reference, column


@hypothesis_settings(max_examples=2000, deadline=None)
@given(text=st.lists(st.one_of(st.sampled_from(_SPECIAL_LINES), _free_text)).map("\n".join))
def test_quoted_printable_is_the_email_packages_byte_for_byte(text: str) -> None:
    body = normalised_body(text)
    part = MIMEPart(policy=SMTP.clone(max_line_length=76))
    part.set_content(body, subtype="plain", charset="utf-8", cte="quoted-printable")
    expected = part.as_bytes().split(b"\r\n\r\n", 1)[1]
    assert qp_encode(body) == expected
    assert all(len(line) <= 76 for line in expected.split(b"\r\n"))


# --- prepared bytes ----------------------------------------------------------------


def test_a_dot_is_doubled_only_where_a_line_starts() -> None:
    assert stuff(b".a\r\nb.\r\n.\r\n..\r\n", at_line_start=True) == b"..a\r\nb.\r\n..\r\n...\r\n"
    assert stuff(b".a\r\n", at_line_start=False) == b".a\r\n"
    assert prepared_value(b"To: a\r\n", at_line_start=True) == (b"To: a\r\n", b"To: a\r\n")
    assert prepared_value(b".x\nb\r.", at_line_start=True) == (
        b".x\r\nb\r\n.",
        b"..x\r\nb\r\n..",
    )
    assert prepared_value(b".x", at_line_start=False) == (b".x", b".x")
    whole = prepare_message(b"a\n.\nb")
    assert whole == PreparedMessage(b"a\r\n..\r\nb\r\n.\r\n", len(b"a\r\n.\r\nb\r\n"), False)
    assert prepare_message("é".encode()).eight_bit


class DottedDigest(CompiledDigest):
    """A digest whose personal values start lines with dots and end lines bare (hostile slots)."""

    def _personal_values(self, recipient: Recipient) -> tuple[bytes, ...]:
        values = list(super()._personal_values(recipient))
        values[4] = b".unsubscribe\n." + values[4]  # a text-part slot, at a line start
        values[6] = b"..\r" + values[6]
        return tuple(values)


async def test_a_personal_value_that_starts_a_line_with_a_dot_is_stuffed(
    smtp_server: RecordingSmtpServer,
) -> None:
    settings = wire_settings(smtp_server)
    digest = compile_digest(
        settings,
        html=f"<p>\n{UNSUBSCRIBE}\n{PREFERENCES}</p>\n",
        text=f"Leave:\n{UNSUBSCRIBE}\n.\n{PREFERENCES}\n",
        kind=DottedDigest,
    )
    person = reader()
    prepared = digest.prepare(person)
    assert b"\r\n..unsubscribe\r\n.." in prepared.data
    assert b"\r\n...\r\nhttps://" in prepared.data  # the bare CR became CRLF, too
    assembled = digest.assemble(person)
    assert b"\r\n.unsubscribe\r\n." in assembled and b"\r\n..\r\nhttps://" in assembled
    assert prepared.size == len(assembled)

    assert await send_through_pool(settings, digest, [person]) == [
        SmtpReply(250, "OK", SmtpStage.DATA)
    ]
    assert smtp_server.handler.wait_for_messages(1, WAIT_SECONDS)
    assert smtp_server.messages[0].raw == assembled


class EmptyLinkDigest(CompiledDigest):
    """A digest whose unsubscribe links are empty in both parts."""

    def _personal_values(self, recipient: Recipient) -> tuple[bytes, ...]:
        values = list(super()._personal_values(recipient))
        values[4] = values[6] = b""
        return tuple(values)


def test_a_line_whose_personal_value_is_empty_is_sent_as_it_stands() -> None:
    digest = compile_digest(
        make_settings(),
        html=f'<a href="{UNSUBSCRIBE}">leave</a>\n',
        text=f"Leave: {UNSUBSCRIBE}\nStay: {PREFERENCES}\n",
        kind=EmptyLinkDigest,
    )
    person = reader()
    assembled = digest.assemble(person)
    prepared = digest.prepare(person)
    assert b"Leave:=20\r\n" in assembled  # its space ends the line now, so it is escaped
    assert b'<a href=3D"">leave</a>' in assembled
    assert unstuffed(prepared.data) == assembled and prepared.size == len(assembled)


def test_the_digest_needs_neither_8bitmime_nor_smtputf8() -> None:
    digest = compile_digest(make_settings(), html="<p>Zoë 日本</p>\n", text="Zoë 日本\n")
    prepared = digest.prepare(reader("山田太郎"))
    assert not prepared.eight_bit
    assert prepared.data.isascii()


# --- PIPELINING ----------------------------------------------------------------------


@pytest.mark.parametrize("pipelining", [True, False])
async def test_mail_rcpt_and_data_go_in_one_write_only_when_the_server_pipelines(
    pipelining: bool,
) -> None:
    with RecordingSmtpServer(pipelining=pipelining, keep_chunks=True) as server:
        settings = wire_settings(server)
        digest = compile_digest(settings, html="<p>hi</p>\n", text="hi\n")
        people = [reader(email=f"r{index}@example.org") for index in range(3)]
        replies = await send_through_pool(settings, digest, people)
        assert server.handler.wait_for_messages(3, WAIT_SECONDS)
        chunks = list(server.handler.chunks)
    assert all(reply.accepted for reply in replies)
    together = [
        chunk
        for chunk in chunks
        if chunk.startswith(b"MAIL FROM:")
        and b"\r\nRCPT TO:" in chunk
        and chunk.endswith(b"DATA\r\n")
    ]
    assert len(together) == (3 if pipelining else 0)
    assert [m.rcpt_tos for m in server.messages] == [[p.email] for p in people]


class AnswersWhenTheNextMailArrives:
    """A scripted SMTP server that answers a message's content only once the next MAIL is in.

    So a client that waits for that answer before writing the next envelope
    (two round trips per message) is found out: its next MAIL never comes first,
    and after WAIT_SECONDS the server answers anyway and notes it.
    """

    def __init__(self, expected: int) -> None:
        self.expected = expected  # messages in all: the last one has no next MAIL
        self.contents: list[bytes] = []
        self.next_mail_came_first: list[bool] = []

    async def session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 scripted ESMTP\r\n")
        read_ahead: bytes | None = None
        while line := read_ahead or await reader.readline():
            read_ahead = None
            verb = line[:4].upper()
            if verb == b"EHLO":
                writer.write(b"250-scripted\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
            elif verb == b"DATA":
                writer.write(b"354 go on\r\n")
                self.contents.append(await reader.readuntil(b"\r\n.\r\n"))
                if len(self.contents) < self.expected:
                    try:
                        read_ahead = await asyncio.wait_for(reader.readline(), WAIT_SECONDS)
                    except TimeoutError:
                        read_ahead = None
                    self.next_mail_came_first.append(
                        read_ahead is not None and read_ahead.startswith(b"MAIL FROM:")
                    )
                writer.write(b"250 2.0.0 queued\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                break
            else:  # MAIL, RCPT, RSET
                writer.write(b"250 OK\r\n")
            await writer.drain()
        writer.close()


async def test_each_envelope_follows_the_last_content_so_a_message_costs_one_round_trip(
    settings: Settings, engine: Engine
) -> None:
    readers = seed_subscribers(engine, 6)
    make_edition(engine)
    scripted = AnswersWhenTheNextMailArrives(len(readers))
    server = await asyncio.start_server(scripted.session, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    one_lane = settings.model_copy(update={"smtp_port": port, "smtp_concurrency": 1})
    try:
        report = await send_edition(one_lane, engine, edition_date=DAY)
    finally:
        server.close()
        await server.wait_closed()
    assert report.sent == len(readers)
    # RFC 2920 3.1: the content opens a group, the next MAIL, RCPT and DATA follow it.
    assert scripted.next_mail_came_first == [True] * (len(readers) - 1)
    assert {row.status for row in ledger_rows(engine)} == {DeliveryStatus.SENT}
    assert sorted(
        re.search(rb"(?m)^To: .*<(.+)>", content).group(1).decode()  # type: ignore[union-attr]
        for content in scripted.contents
    ) == sorted(readers)


async def test_an_envelope_written_ahead_for_a_message_kept_back_is_never_completed() -> None:
    # The lane offered B while A went out, then sent C instead (B's edition was
    # paused meanwhile, say): the server may sit in DATA waiting for B, so only a
    # new connection can carry C, and B must never arrive.
    with RecordingSmtpServer(pipelining=True) as server:
        settings = wire_settings(server)
        digest = compile_digest(settings, html="<p>hi</p>\n", text="hi\n")
        a, b, c = (reader(email=f"{name}@example.org") for name in "abc")
        pool = SmtpPool(settings)
        try:
            first = await pool.send(
                0,
                digest.envelope_from,
                a.email,
                digest.prepare(a),
                next_message=lambda: NextMessage(digest.envelope_from, b.email, digest.prepare(b)),
            )
            other = await pool.send(0, digest.envelope_from, c.email, digest.prepare(c))
        finally:
            await pool.aclose()
        assert server.handler.wait_for_messages(2, WAIT_SECONDS)
        commands = list(server.handler.commands)
    assert first.accepted and other.accepted
    assert "RCPT b@example.org" in commands  # B's envelope did go out
    assert [m.rcpt_tos for m in server.messages] == [["a@example.org"], ["c@example.org"]]


# Each fault: where it is injected, the reply, the stage and whom the worker blames.
FAULTS = [
    ("mail", "553 5.7.1 sender not allowed", 553, SmtpStage.MAIL, Blame.RELAY),
    ("mail", "451 4.3.0 try later", 451, SmtpStage.MAIL, Blame.READER),
    ("rcpt", "550 5.1.1 no such user", 550, SmtpStage.RCPT, Blame.READER),
    ("rcpt", "554 5.7.1 refused by policy", 554, SmtpStage.RCPT, Blame.POLICY),
    ("rcpt", "452 4.2.2 over quota", 452, SmtpStage.RCPT, Blame.READER),
    ("rcpt", "421 4.7.0 too many connections", 421, SmtpStage.RCPT, Blame.READER),
    ("data", "554 5.6.0 content refused", 554, SmtpStage.DATA, Blame.READER),
    ("data", "451 4.3.0 try later", 451, SmtpStage.DATA, Blame.READER),
    ("rcpt", "DROP", None, SmtpStage.CONNECTION, Blame.READER),
    ("data", "DROP", None, SmtpStage.CONNECTION, Blame.READER),
]


@pytest.mark.parametrize("mode", ["written-ahead", "pipelining", "one-by-one"])
@pytest.mark.parametrize(("where", "answer", "code", "stage", "blame"), FAULTS)
async def test_each_refusal_is_judged_at_its_stage_and_the_next_reader_still_gets_mail(
    mode: str,
    where: str,
    answer: str,
    code: int | None,
    stage: SmtpStage,
    blame: Blame,
) -> None:
    victim = "victim@example.org"
    with RecordingSmtpServer(pipelining=mode != "one-by-one") as server:
        if where == "mail":
            # The sender is the same for both; refuse only the first MAIL FROM.
            server.handler.sender_fault = lambda _sender, count: answer if count == 1 else None
        else:
            server.handler.fault = lambda at, address, _n: (
                answer if at == where and address == victim else None
            )
        settings = wire_settings(server)
        digest = compile_digest(settings, html="<p>hi</p>\n", text="hi\n")
        refused, accepted = await send_through_pool(
            settings,
            digest,
            [reader(email=victim), reader(email="next@example.org")],
            ahead=mode == "written-ahead",
        )
        assert server.handler.wait_for_messages(1, WAIT_SECONDS)
        commands = list(server.handler.commands)
    assert (refused.code, refused.stage) == (code, stage)
    if code is not None:
        assert refused.text == answer.split(" ", 1)[1]
    assert blame_reply(refused) is blame
    assert accepted.accepted
    assert [m.rcpt_tos for m in server.messages] == [["next@example.org"]]
    if answer != "DROP" and where != "data":
        # A refused envelope is reset before the next message's MAIL FROM.
        assert commands.index("RSET") < max(
            index for index, command in enumerate(commands) if command.startswith("MAIL")
        )


# --- SIZE --------------------------------------------------------------------------


async def test_mail_from_declares_the_exact_size_when_the_server_offers_size() -> None:
    with RecordingSmtpServer(pipelining=True, size_limit=10_000_000) as server:
        settings = wire_settings(server)
        digest = compile_digest(settings, html="<p>hi\n.dot</p>\n" * 50, text=".hi\n" * 50)
        [reply] = await send_through_pool(settings, digest, [reader()])
        assert server.handler.wait_for_messages(1, WAIT_SECONDS)
    assert reply.accepted
    [mail] = [command for command in server.handler.commands if command.startswith("MAIL")]
    assert mail == f"MAIL digest@news.example.org SIZE={len(server.messages[0].raw)}"


async def test_without_size_advertised_mail_from_carries_no_parameters() -> None:
    with RecordingSmtpServer(hidden=frozenset({"SIZE"})) as server:
        settings = wire_settings(server)
        digest = compile_digest(settings, html="<p>hi</p>\n", text="hi\n")
        [reply] = await send_through_pool(settings, digest, [reader()])
        assert server.handler.wait_for_messages(1, WAIT_SECONDS)
    assert reply.accepted
    assert [c for c in server.handler.commands if c.startswith("MAIL")] == [
        "MAIL digest@news.example.org"
    ]


async def test_a_message_over_the_servers_size_limit_fails_alone_and_is_never_offered() -> None:
    with RecordingSmtpServer(pipelining=True, size_limit=3000) as server:
        settings = wire_settings(server)
        big = compile_digest(settings, html="<p>long</p>\n" * 400, text="long\n" * 400)
        small = compile_digest(settings, html="<p>hi</p>\n", text="hi\n")
        pool = SmtpPool(settings)
        try:
            too_big = await pool.send(
                0, big.envelope_from, "ada@example.org", big.prepare(reader())
            )
            fine = await pool.send(
                0,
                small.envelope_from,
                "bob@example.org",
                small.prepare(reader(email="bob@example.org")),
            )
        finally:
            await pool.aclose()
        assert server.handler.wait_for_messages(1, WAIT_SECONDS)
        commands = list(server.handler.commands)
    size = big.prepare(reader()).size
    assert (too_big.code, too_big.stage) == (552, SmtpStage.PREPARE)
    assert too_big.text.startswith(f"5.3.4 the message is {size} bytes, over the 3000-byte limit")
    assert not too_big.ends_session
    assert blame_reply(too_big) is Blame.READER
    assert classify_reply(too_big, attempt=1, max_attempts=5) is OutcomeKind.FAILED
    assert fine.accepted
    assert [m.rcpt_tos for m in server.messages] == [["bob@example.org"]]
    assert [c for c in commands if c.startswith("MAIL")] == [
        f"MAIL digest@news.example.org SIZE={len(server.messages[0].raw)}"
    ]


async def test_an_envelope_address_that_cannot_go_on_the_wire_is_refused_before_sending(
    smtp_server: RecordingSmtpServer,
) -> None:
    settings = wire_settings(smtp_server)
    digest = compile_digest(settings, html="<p>hi</p>\n", text="hi\n")
    pool = SmtpPool(settings)
    try:
        injected = await pool.send(
            0, digest.envelope_from, "a@x.org>\r\nRCPT TO:<b@x.org", digest.prepare(reader())
        )
        fine = await pool.send(0, digest.envelope_from, "ada@example.org", digest.prepare(reader()))
    finally:
        await pool.aclose()
    assert (injected.code, injected.stage) == (501, SmtpStage.RCPT)
    assert fine.accepted
    assert smtp_server.handler.wait_for_messages(1, WAIT_SECONDS)
    assert smtp_server.handler.recipients() == ["ada@example.org"]


async def test_a_transaction_cancelled_midway_leaves_no_reply_for_the_next_message() -> None:
    held = "held@example.org"
    hold = Hold(lambda address: address == held)
    with RecordingSmtpServer(pipelining=True, hold=hold) as server:
        settings = wire_settings(server)
        digest = compile_digest(settings, html="<p>hi</p>\n", text="hi\n")
        pool = SmtpPool(settings)
        try:
            stuck = asyncio.create_task(
                pool.send(0, digest.envelope_from, held, digest.prepare(reader(email=held)))
            )
            assert await asyncio.to_thread(hold.reached.wait, WAIT_SECONDS)
            stuck.cancel()
            with pytest.raises(asyncio.CancelledError):
                await stuck
            hold.release()
            after = await pool.send(
                0, digest.envelope_from, "next@example.org", digest.prepare(reader())
            )
        finally:
            await pool.aclose()
        assert server.handler.wait_for_messages(1, WAIT_SECONDS)
    assert after.accepted
    assert [m.rcpt_tos for m in server.messages] == [["next@example.org"]]


@pytest.mark.parametrize("offered", [True, False], ids=["offered", "not-offered"])
async def test_8bit_content_says_body_8bitmime_or_is_not_offered_to_a_server_without_it(
    offered: bool,
) -> None:
    hidden = frozenset({"SIZE"} if offered else {"SIZE", "8BITMIME"})
    with RecordingSmtpServer(hidden=hidden) as server:
        settings = wire_settings(server)
        raw = "From: a@example.org\r\nTo: b@example.org\r\nSubject: x\r\n\r\nZoë\r\n".encode()
        pool = SmtpPool(settings)
        try:
            eight_bit = await pool.send(0, "a@example.org", "b@example.org", prepare_message(raw))
            plain = await pool.send(
                0, "a@example.org", "c@example.org", prepare_message(b"Subject: y\r\n\r\nhi\r\n")
            )
        finally:
            await pool.aclose()
        assert server.handler.wait_for_messages(2 if offered else 1, WAIT_SECONDS)
        mails = [c for c in server.handler.commands if c.startswith("MAIL")]
    assert plain.accepted
    if offered:
        assert eight_bit.accepted
        assert mails == ["MAIL a@example.org BODY=8BITMIME", "MAIL a@example.org"]
        assert server.messages[0].raw == raw
    else:
        assert (eight_bit.code, eight_bit.stage) == (554, SmtpStage.PREPARE)
        assert "8BITMIME" in eight_bit.text
        assert mails == ["MAIL a@example.org"]


@pytest.mark.parametrize("offered", [True, False], ids=["offered", "not-offered"])
async def test_a_non_ascii_address_says_smtputf8_only_to_a_server_that_offers_it(
    offered: bool,
) -> None:
    hidden = frozenset({"SIZE"} if offered else {"SIZE", "SMTPUTF8"})
    with RecordingSmtpServer(hidden=hidden) as server:
        settings = wire_settings(server)
        pool = SmtpPool(settings)
        try:
            reply = await pool.send(
                0, "a@example.org", "zoë@example.org", prepare_message(b"Subject: y\r\n\r\nhi\r\n")
            )
        finally:
            await pool.aclose()
        if offered:
            assert server.handler.wait_for_messages(1, WAIT_SECONDS)
        mails = [c for c in server.handler.commands if c.startswith("MAIL")]
    if offered:
        assert reply.accepted
        assert mails == ["MAIL a@example.org SMTPUTF8"]
        assert server.handler.recipients() == ["zoë@example.org"]
    else:
        assert (reply.code, reply.stage) == (553, SmtpStage.PREPARE)
        assert mails == []


async def test_a_send_to_a_relay_whose_size_limit_a_digest_exceeds_fails_rows_not_the_edition(
    database_url: str,
) -> None:
    with RecordingSmtpServer(pipelining=True, size_limit=1000) as server:
        settings = load_settings(
            database_url=database_url,
            smtp_host="127.0.0.1",
            smtp_port=server.port,
            secret_key="test-secret-key-0123456789",
            base_url="https://news.example.org",
            from_address="Daily ML Papers <digest@news.example.org>",
        )
        engine = create_db_engine(database_url)
        try:
            upgrade_schema(engine)
            seed_subscribers(engine, 3)
            make_edition(engine)
            report = await send_edition(settings, engine, edition_date=DAY)
            rows = ledger_rows(engine)
        finally:
            engine.dispose()
        commands = list(server.handler.commands)
    assert (report.sent, report.failed, report.paused_reason) == (0, 3, None)
    assert [(row.status, row.attempts, row.last_code) for row in rows] == [
        (DeliveryStatus.FAILED, 1, 552)
    ] * 3
    assert all("over the 1000-byte limit (SIZE)" in (row.last_error or "") for row in rows)
    assert commands == []  # never offered
