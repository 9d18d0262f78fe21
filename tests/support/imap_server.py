"""A real IMAP server for tests: Debian's Dovecot, with its own config in a temp directory.

One mailbox user (passwd-file authentication, Maildir storage) behind two
listeners on 127.0.0.1: plain IMAP (which also offers STARTTLS) and implicit
TLS, both with a fresh self-signed certificate. Run as root (CI containers),
Dovecot refuses to run its login processes or to access mail as root, so those
run as the package's `dovenull` user and as `nobody`; run as anyone else,
everything runs as that user.
"""

from __future__ import annotations

import contextlib
import grp
import imaplib
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.certificates import SelfSignedCertificate, make_self_signed_certificate
from tests.support.outside_tools import installed_program, missing_tool

DOVECOT_CANDIDATES = ("/usr/sbin/dovecot", "/usr/local/sbin/dovecot")
START_LIMIT_SECONDS = 20.0
USER = "bounces"
PASSWORD = "imap-test-password"
# A second login to the same mailbox, with a password imaplib's LOGIN cannot send.
UTF8_USER = "bounces-utf8"
UTF8_PASSWORD = "mot-de-passe-été-🔑"


def require_dovecot() -> str:
    """The dovecot executable; without it the test skips, except in CI (CI=true), where it fails."""
    # Debian package `dovecot-imapd`.
    binary = installed_program("dovecot", *DOVECOT_CANDIDATES)
    if binary is None:
        missing_tool(
            "IMAP tests", "needs Dovecot: apt-get install dovecot-imapd (.ci/run installs it)"
        )
    return binary


@dataclass
class DovecotServer:
    """A running Dovecot; `port` is plain IMAP (and STARTTLS), `tls_port` implicit TLS."""

    port: int
    tls_port: int
    certificate: SelfSignedCertificate
    maildir: Path
    user: str = USER
    password: str = PASSWORD

    @contextlib.contextmanager
    def client(self) -> Iterator[imaplib.IMAP4]:
        """A logged-in plain IMAP session with INBOX selected."""
        imap = imaplib.IMAP4("127.0.0.1", self.port, timeout=20)
        try:
            imap.login(self.user, self.password)
            imap.select("INBOX")
            yield imap
        finally:
            with contextlib.suppress(imaplib.IMAP4.error, OSError):
                imap.logout()

    def append(self, raw: bytes) -> None:
        """Put a message into INBOX over IMAP, as a relay's delivery would."""
        with self.client() as imap:
            status, detail = imap.append("INBOX", None, None, raw)
            assert status == "OK", detail

    def messages(self) -> list[bytes]:
        """The raw messages now in INBOX (those flagged deleted but not yet expunged too)."""
        with self.client() as imap:
            status, data = imap.uid("SEARCH", "ALL")
            assert status == "OK", data
            found = []
            for uid in data[0].split():
                status, parts = imap.uid("FETCH", uid, "(BODY.PEEK[])")
                assert status == "OK", parts
                found.extend(part[1] for part in parts if isinstance(part, tuple))
            return found

    def flags(self) -> list[str]:
        """The flags of each message now in INBOX, as the server lists them."""
        with self.client() as imap:
            status, data = imap.uid("FETCH", "1:*", "(FLAGS)")
            assert status == "OK", data
            return [item.decode() for item in data if isinstance(item, bytes)]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _config(root: Path, *, port: int, tls_port: int, certificate: SelfSignedCertificate) -> str:
    me = pwd.getpwuid(os.geteuid())
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        login_user, internal_user, internal_group = "dovenull", "dovecot", "dovecot"
        mail_uid, mail_gid = nobody.pw_uid, nobody.pw_gid
    else:
        login_user, internal_user = me.pw_name, me.pw_name
        internal_group = grp.getgrgid(me.pw_gid).gr_name
        mail_uid, mail_gid = me.pw_uid, me.pw_gid
    return f"""
protocols = imap
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
instance_name = test-{port}
log_path = {root}/dovecot.log
ssl = yes
ssl_cert = <{certificate.cert_file}
ssl_key = <{certificate.key_file}
disable_plaintext_auth = no
auth_mechanisms = plain login
default_login_user = {login_user}
default_internal_user = {internal_user}
default_internal_group = {internal_group}
first_valid_uid = 1
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={mail_uid} gid={mail_gid} home={root}/home/{USER}
}}
mail_location = maildir:~/Maildir
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {tls_port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
"""


@contextlib.contextmanager
def running_dovecot() -> Iterator[DovecotServer]:
    """Start Dovecot on two free ports with one user and an empty INBOX; stop it afterwards."""
    binary = require_dovecot()
    # Not the test's tmp_path: its 0700 parents would keep Dovecot's unprivileged users out.
    root = Path(tempfile.mkdtemp(prefix="dovecot-test-"))
    root.chmod(0o755)
    process: subprocess.Popen[bytes] | None = None
    try:
        (root / "run").mkdir()
        (root / "state").mkdir()
        home = root / "home"
        home.mkdir()
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            os.chown(home, nobody.pw_uid, nobody.pw_gid)
        (root / "passwd").write_text(
            f"{USER}:{{PLAIN}}{PASSWORD}\n{UTF8_USER}:{{PLAIN}}{UTF8_PASSWORD}\n", encoding="utf-8"
        )
        certificate = make_self_signed_certificate(root)
        for _ in range(3):  # another process may take a probed port before Dovecot binds it
            port, tls_port = _free_port(), _free_port()
            config = root / "dovecot.conf"
            config.write_text(_config(root, port=port, tls_port=tls_port, certificate=certificate))
            process = subprocess.Popen(
                [binary, "-F", "-c", str(config)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            deadline = time.monotonic() + START_LIMIT_SECONDS
            while process.poll() is None and time.monotonic() < deadline:
                if _accepts(port) and _accepts(tls_port):
                    break
                time.sleep(0.05)
            if process.poll() is None and _accepts(port):
                break
            _stop(process)
            process = None
        if process is None:
            log = root / "dovecot.log"
            raise RuntimeError(
                "Dovecot did not start: " + (log.read_text() if log.exists() else "no log")
            )
        yield DovecotServer(
            port=port,
            tls_port=tls_port,
            certificate=certificate,
            maildir=home / USER / "Maildir",
        )
    finally:
        if process is not None:
            _stop(process)
        shutil.rmtree(root, ignore_errors=True)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stderr is not None:
        process.stderr.close()


def tls_client_context(server: DovecotServer) -> ssl.SSLContext:
    """A client context that trusts the server's self-signed certificate."""
    return ssl.create_default_context(cafile=str(server.certificate.cert_file))
