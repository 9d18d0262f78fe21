"""The client's address behind reverse proxies: `X-Forwarded-For` believed only from trusted ones.

Anyone can send an `X-Forwarded-For` header, so it names the client only when
the connection comes from a proxy listed in `NEWSLETTER_TRUSTED_PROXIES`.
Each proxy appends the address it received the request from; reading the
list from the right, the first hop that is not a trusted proxy is the client
(what the client wrote itself sits further left and is ignored). With no
trusted proxies configured, the header is ignored altogether.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

logger = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_hop(value: str) -> IPAddress | None:
    """An address from one `X-Forwarded-For` entry (`1.2.3.4`, `1.2.3.4:80`, `[::1]:80`)."""
    value = value.strip()
    if value.startswith("[") and "]" in value:
        value = value[1 : value.index("]")]
    elif value.count(":") == 1:
        value = value.partition(":")[0]
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


class TrustedProxies:
    """The proxies whose `X-Forwarded-For` is believed, and the rule for reading it."""

    def __init__(self, networks: Iterable[str]) -> None:
        self.networks = tuple(ipaddress.ip_network(network, strict=False) for network in networks)

    def trusts(self, address: IPAddress) -> bool:
        """Whether this address is one of the trusted proxies."""
        return any(address in network for network in self.networks)

    def client_address(self, peer: IPAddress, forwarded_for: str) -> IPAddress:
        """The client behind a trusted `peer`: the rightmost hop that is not a trusted proxy.

        A hop that is not an address stops the walk: nothing to its left was
        written by a proxy we trust, so the nearest trusted hop is the answer.
        """
        nearest_trusted = peer
        for entry in reversed(forwarded_for.split(",")):
            hop = parse_hop(entry)
            if hop is None:
                return nearest_trusted
            if not self.trusts(hop):
                return hop
            nearest_trusted = hop
        return nearest_trusted  # every hop is a trusted proxy: the request began among them


class ForwardedClientMiddleware:
    """Puts the real client (and scheme) into the request scope when a trusted proxy says so."""

    def __init__(self, app: ASGIApp, *, proxies: TrustedProxies) -> None:
        self.app = app
        self.proxies = proxies
        self._warned: set[str] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Rewrite `client` and `scheme` from a trusted proxy's headers; pass everything on."""
        client = scope.get("client")
        if scope["type"] != "http" or not client:
            await self.app(scope, receive, send)
            return
        peer = parse_hop(str(client[0]))
        forwarded_for = _joined_header(scope, b"x-forwarded-for")
        if peer is None or not self.proxies.trusts(peer):
            if forwarded_for is not None and peer is not None and not peer.is_global:
                self._warn_once(
                    f"untrusted:{peer}",
                    "ignoring X-Forwarded-For from %s: it is not in NEWSLETTER_TRUSTED_PROXIES, "
                    "so every client behind it counts as %s (see the README on proxies)",
                    peer,
                    peer,
                )
            await self.app(scope, receive, send)
            return
        scope = dict(scope)
        if forwarded_for is None:
            self._warn_once(
                f"silent:{peer}",
                "the trusted proxy %s sent no X-Forwarded-For: every client behind it shares "
                "one sign-up rate limit; make it set the header",
                peer,
            )
        else:
            scope["client"] = (str(self.proxies.client_address(peer, forwarded_for)), 0)
        proto = _joined_header(scope, b"x-forwarded-proto")
        if proto is not None:
            nearest = proto.split(",")[-1].strip().lower()
            if nearest in ("http", "https"):
                scope["scheme"] = nearest
        await self.app(scope, receive, send)

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        # A misconfigured proxy shows on every request: say it once, not a million times.
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(message, *args)


def _joined_header(scope: Scope, name: bytes) -> str | None:
    values = [value.decode("latin-1") for key, value in scope["headers"] if key == name]
    return ",".join(values) if values else None
