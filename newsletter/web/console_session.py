"""The console's sign-in: a signed session cookie with an expiry, and its CSRF token.

Signing in with `NEWSLETTER_ADMIN_TOKEN` gives a cookie `ID.EXPIRES.MAC`: ID a
random session id, EXPIRES the end of the session in whole seconds since the
Unix epoch, MAC an HMAC-SHA256 over both under a key derived from
`NEWSLETTER_SECRET_KEY` for this purpose only. The cookie is HttpOnly and
SameSite=Strict, and lives under `/admin` alone. Nothing is stored server-side;
changing the secret key signs everybody out.

Every form of the console carries a CSRF token, the HMAC of the session id
under a second derived key: a page of another site can neither read it nor
compute it. The sign-in form, posted before there is a session, carries a
random value that must equal a short-lived cookie of the same name (a double
submit), so a sign-in cannot be forged either.

There is no hidden clock: callers pass `now`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

SESSION_COOKIE = "console_session"
SIGN_IN_COOKIE = "console_sign_in"
COOKIE_PATH = "/admin"
SESSION_LIFETIME = timedelta(hours=8)
_SESSION = re.compile(r"([A-Za-z0-9_-]{22})\.([0-9]{1,12})\.([A-Za-z0-9_-]{43})")


@dataclass(frozen=True)
class ConsoleSession:
    """A signed-in operator's session: its id and when it ends."""

    session_id: str
    expires_at: datetime


def _key(secret_key: str, purpose: str) -> bytes:
    return hmac.new(
        secret_key.encode("utf-8"), b"newsletter-console:" + purpose.encode("ascii"), hashlib.sha256
    ).digest()


def _mac(secret_key: str, purpose: str, signed: str) -> str:
    digest = hmac.new(_key(secret_key, purpose), signed.encode("ascii"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def admin_token_matches(given: str, admin_token: str | None) -> bool:
    """Whether `given` is the configured admin token (compared in constant time)."""
    if not admin_token:
        return False
    return hmac.compare_digest(given.encode("utf-8"), admin_token.encode("utf-8"))


def new_session_cookie(secret_key: str, *, now: datetime) -> str:
    """A fresh session's cookie value, valid for `SESSION_LIFETIME` from `now`."""
    session_id = secrets.token_urlsafe(16)
    expires = int((now + SESSION_LIFETIME).timestamp())
    signed = f"{session_id}.{expires}"
    return f"{signed}.{_mac(secret_key, 'session', signed)}"


def read_session_cookie(
    secret_key: str, value: str | None, *, now: datetime
) -> ConsoleSession | None:
    """The session this cookie value signs, or None if absent, altered or expired."""
    match = _SESSION.fullmatch(value or "")
    if match is None:
        return None
    session_id, expires, mac = match.groups()
    if not hmac.compare_digest(mac, _mac(secret_key, "session", f"{session_id}.{expires}")):
        return None
    expires_at = datetime.fromtimestamp(int(expires), tz=UTC)
    if expires_at <= now:
        return None
    return ConsoleSession(session_id=session_id, expires_at=expires_at)


def csrf_token(secret_key: str, session: ConsoleSession) -> str:
    """The CSRF token every form of this session carries."""
    return _mac(secret_key, "csrf", session.session_id)


def csrf_token_matches(secret_key: str, session: ConsoleSession, given: str) -> bool:
    """Whether a posted CSRF token is this session's."""
    return hmac.compare_digest(given.encode("utf-8"), csrf_token(secret_key, session).encode())


def new_sign_in_nonce() -> str:
    """The random value the sign-in form and its cookie both carry."""
    return secrets.token_urlsafe(16)


def sign_in_nonce_matches(posted: str, cookie: str | None) -> bool:
    """Whether the sign-in form's value is the one its cookie holds (a double submit)."""
    if not posted or not cookie:
        return False
    return hmac.compare_digest(posted.encode("utf-8"), cookie.encode("utf-8"))
