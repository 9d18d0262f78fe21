"""A real relay for tests: Debian's Postfix with its own port, spool and Maildir in a temp dir.

Its own `config_directory` (main.cf, master.cf) holds only the services a
relay that delivers locally needs; `inet_interfaces = 127.0.0.1`, one smtpd on
a free port, every address of the test domain delivered by the `virtual`
agent into one Maildir, and the log in the temp directory
(`maillog_file`). Postfix's master must start as root (its daemons then run as
the package's `postfix` user, mail is written as `nobody`): elsewhere the test
skips, except in CI (CI=true), where it fails. `SmtpTap` sits between a client
and the relay and records what each read carried, to see the client pipeline.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import selectors
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.outside_tools import installed_program, missing_tool

MAIL_DOMAIN = "example.org"
# The size limit smtpd advertises unless told otherwise (Postfix's default).
MESSAGE_SIZE_LIMIT = 10_240_000

# The services a relay that delivers locally uses, none in a chroot (no copy of /etc needed).
MASTER_CF = """\
{listen} inet n - n - - smtpd
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
virtual unix - n n - - virtual
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
"""


def require_postfix() -> str:
    """The postfix command, run as root; otherwise skip, except in CI (CI=true), where it fails."""
    binary = installed_program("postfix", "/usr/sbin/postfix")  # Debian package `postfix`
    reason = None
    if binary is None:
        reason = "needs Postfix: apt-get install postfix (.ci/run installs it)"
    elif os.geteuid() != 0:
        reason = "Postfix's master process starts only as root"
    if reason is not None:
        missing_tool("relay test", reason)
    assert binary is not None
    return binary


@dataclass
class PostfixRelay:
    """A running Postfix: SMTP on `port`, all mail for the test domain delivered into `maildir`."""

    port: int
    maildir: Path
    log_file: Path

    def delivered(self) -> list[bytes]:
        """The raw messages delivered so far, in the order the Maildir's names sort."""
        found = sorted((self.maildir / "new").glob("*")) + sorted((self.maildir / "cur").glob("*"))
        return [path.read_bytes() for path in found]

    def wait_for_deliveries(self, count: int, timeout: float = 60.0) -> list[bytes]:
        """Wait until `count` messages sit in the Maildir (delivery happens later); return them."""
        deadline = time.monotonic() + timeout
        while True:
            messages = self.delivered()
            if len(messages) >= count or time.monotonic() > deadline:
                return messages
            time.sleep(0.05)

    def log(self) -> str:
        """What Postfix logged so far."""
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def wait_for_log(self, fragment: str, count: int, timeout: float = 60.0) -> str:
        """The log once `fragment` is in it `count` times (it is written after the delivery)."""
        deadline = time.monotonic() + timeout
        while True:
            log = self.log()
            if log.count(fragment) >= count or time.monotonic() > deadline:
                return log
            time.sleep(0.05)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _main_cf(root: Path, *, mail_uid: int, mail_gid: int, size_limit: int, discard: bool) -> str:
    # A benchmark queues each message as a relay does, then drops it instead of writing a Maildir.
    transport = "virtual_transport = discard:\n" if discard else ""
    return f"""\
compatibility_level = 3.6
config_directory = {root}/etc
queue_directory = {root}/spool
data_directory = {root}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = relay.test
mydomain = relay.test
myorigin = relay.test
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
mydestination =
relayhost =
alias_maps =
alias_database =
local_recipient_maps =
smtpd_peername_lookup = no
smtputf8_enable = yes
message_size_limit = {size_limit}
virtual_mailbox_domains = {MAIL_DOMAIN}
virtual_mailbox_base = {root}/mail
virtual_mailbox_maps = static:inbox/
virtual_uid_maps = static:{mail_uid}
virtual_gid_maps = static:{mail_gid}
maillog_file = {root}/postfix.log
maillog_file_prefixes = {root}
{transport}"""


@contextlib.contextmanager
def running_postfix(
    *, message_size_limit: int = MESSAGE_SIZE_LIMIT, discard: bool = False
) -> Iterator[PostfixRelay]:
    """Start Postfix on a free port with an empty Maildir (or discarding); stop it afterwards."""
    binary = require_postfix()
    # Not the test's tmp_path: its 0700 parents would keep the `postfix` user out.
    root = Path(tempfile.mkdtemp(prefix="postfix-test-"))
    root.chmod(0o755)
    nobody = pwd.getpwnam("nobody")
    owner = pwd.getpwnam("postfix")
    started: Path | None = None
    try:
        for name in ("etc", "spool", "data", "mail"):
            (root / name).mkdir()
        os.chown(root / "data", owner.pw_uid, owner.pw_gid)
        os.chown(root / "mail", nobody.pw_uid, nobody.pw_gid)
        config = root / "etc"
        main_cf = _main_cf(
            root,
            mail_uid=nobody.pw_uid,
            mail_gid=nobody.pw_gid,
            size_limit=message_size_limit,
            discard=discard,
        )
        (config / "main.cf").write_text(main_cf)
        log = root / "postfix.log"
        for _ in range(3):  # another process may take a probed port before smtpd binds it
            port = _free_port()
            (config / "master.cf").write_text(MASTER_CF.format(listen=f"127.0.0.1:{port}"))
            # `check` creates the spool's directories with the owners Postfix wants; `start`
            # returns once the master has bound the port, or fails.
            subprocess.run([binary, "-c", str(config), "check"], check=True, timeout=60)
            result = subprocess.run(
                [binary, "-c", str(config), "start"], capture_output=True, timeout=60
            )
            if result.returncode == 0:
                started = config
                break
        if started is None:
            raise RuntimeError(
                "Postfix did not start: " + (log.read_text() if log.exists() else "no log")
            )
        yield PostfixRelay(port=port, maildir=root / "mail" / "inbox", log_file=log)
    finally:
        if started is not None:
            # `stop` waits for the master to end, and kills it if it takes too long.
            subprocess.run([binary, "-c", str(started), "stop"], capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class TappedSession:
    """One connection through a `SmtpTap`: each read, in order, as (side, bytes)."""

    reads: list[tuple[str, bytes]] = field(default_factory=list)

    def sent_by(self, side: str) -> bytes:
        """Everything `side` ("client" or "server") sent, joined."""
        return b"".join(data for who, data in self.reads if who == side)


class SmtpTap:
    """A TCP relay between the client and a server that records what each read carried.

    A client that pipelines writes MAIL, RCPT and DATA at once, so they arrive
    in one read; one that waits for each reply sends them in separate reads.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.sessions: list[TappedSession] = []
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen()
        self.port: int = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> SmtpTap:
        self._accepting.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._listener.close()
        self._accepting.join(timeout=10)
        for thread in self._threads:
            thread.join(timeout=30)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed by __exit__
                return
            session = TappedSession()
            self.sessions.append(session)
            thread = threading.Thread(target=self._carry, args=(client, session), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _carry(self, client: socket.socket, session: TappedSession) -> None:
        server = socket.create_connection(("127.0.0.1", self.target_port))
        peers = {client: (server, "client"), server: (client, "server")}
        with client, server, selectors.DefaultSelector() as selector:
            for sock in peers:
                selector.register(sock, selectors.EVENT_READ)
            while True:
                for key, _ in selector.select():
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    other, side = peers[sock]
                    try:
                        data = sock.recv(65536)
                    except OSError:
                        data = b""
                    if not data:
                        return
                    session.reads.append((side, data))
                    other.sendall(data)
