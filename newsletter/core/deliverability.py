"""What a bulk sender must have before the first send, checked: `newsletter check`.

Each check gives one `CheckResult`: passed, missing (something to fix before
sending) or unchecked (the network or DNS could not be asked; not a failure).
The outside world comes in through two small functions, a TXT lookup and a
URL probe, so tests pass fakes and the CLI passes `dns_txt_lookup` and
`http_probe`, both with short timeouts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import dns.exception
import dns.resolver
import httpx

from newsletter.core.dkim import DkimSigner
from newsletter.core.errors import ConfigurationError, NewsletterError
from newsletter.core.settings import (
    DEFAULT_SECRET_KEY,
    GENERATE_SECRET,
    Settings,
    secret_weakness,
)

__all__ = [
    "CheckResult",
    "CheckStatus",
    "LookupUnavailableError",
    "dns_txt_lookup",
    "http_probe",
    "run_checks",
]

DEFAULT_POSTAL_ADDRESS: Final = Settings.model_fields["postal_address"].default
LOOKUP_TIMEOUT_SECONDS: Final = 3.0


class LookupUnavailableError(NewsletterError):
    """The network, a resolver or a server could not be asked: the check is left open."""


# A name's TXT strings ([] when the name or its TXT records do not exist);
# raises LookupUnavailableError when DNS cannot be asked.
TxtLookup = Callable[[str], list[str]]
# A URL's HTTP status; raises LookupUnavailableError when it cannot be reached.
UrlProbe = Callable[[str], int]


class CheckStatus(StrEnum):
    """The outcome of one check."""

    PASSED = "passed"
    MISSING = "missing"
    UNCHECKED = "unchecked"

    @property
    def mark(self) -> str:
        """The one-character mark printed before the check's line."""
        return {"passed": "✓", "missing": "✗", "unchecked": "?"}[self.value]


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One line of `newsletter check`."""

    name: str
    status: CheckStatus
    detail: str

    @property
    def line(self) -> str:
        """`✓ name: detail`, as printed."""
        return f"{self.status.mark} {self.name}: {self.detail}"


def dns_txt_lookup(name: str) -> list[str]:
    """The TXT strings at `name` from the system's resolver, with a short timeout."""
    try:
        resolver = dns.resolver.Resolver()
    except dns.resolver.NoResolverConfiguration:
        raise LookupUnavailableError("no DNS resolver is configured") from None
    return txt_lookup_with(resolver)(name)


def txt_lookup_with(resolver: dns.resolver.Resolver) -> TxtLookup:
    """A TXT lookup through this resolver (tests point one at a closed port)."""

    def lookup(name: str) -> list[str]:
        try:
            answer = resolver.resolve(name, "TXT", lifetime=LOOKUP_TIMEOUT_SECONDS)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.DNSException as error:
            raise LookupUnavailableError(f"DNS did not answer ({type(error).__name__})") from None
        return [b"".join(record.strings).decode("utf-8", "replace") for record in answer]

    return lookup


def http_probe(url: str) -> int:
    """The status of a HEAD request to `url`, with a short timeout and no redirects followed."""
    try:
        response = httpx.head(url, timeout=LOOKUP_TIMEOUT_SECONDS, follow_redirects=False)
    except httpx.HTTPError as error:
        raise LookupUnavailableError(f"no answer ({type(error).__name__})") from None
    return response.status_code


def _passed(name: str, detail: str) -> CheckResult:
    return CheckResult(name, CheckStatus.PASSED, detail)


def _missing(name: str, detail: str) -> CheckResult:
    return CheckResult(name, CheckStatus.MISSING, detail)


def _unchecked(name: str, error: LookupUnavailableError) -> CheckResult:
    return CheckResult(name, CheckStatus.UNCHECKED, f"could not check: {error}")


def _check_from_domain(settings: Settings) -> CheckResult:
    domain = settings.sender_domain
    if domain == "localhost" or domain.endswith(".localhost") or "." not in domain:
        return _missing("From domain", f"{domain!r}: set NEWSLETTER_FROM_ADDRESS on your domain")
    return _passed("From domain", domain)


def _check_base_url(settings: Settings, probe: UrlProbe) -> list[CheckResult]:
    url = settings.base_url
    if not url.startswith("https://"):
        return [
            _missing(
                "Base URL",
                f"{url}: one-click unsubscribe needs an https NEWSLETTER_BASE_URL",
            )
        ]
    results = [_passed("Base URL", f"{url} is https")]
    try:
        status = probe(url + "/")
    except LookupUnavailableError as error:
        return [*results, _unchecked("Base URL reachable", error)]
    if status >= 500:
        results.append(_missing("Base URL reachable", f"{url}/ answered {status}"))
    else:
        results.append(_passed("Base URL reachable", f"{url}/ answered {status}"))
    return results


def _check_postal_address(settings: Settings) -> CheckResult:
    if settings.postal_address.strip() in ("", DEFAULT_POSTAL_ADDRESS):
        return _missing(
            "Postal address", "the example default: set NEWSLETTER_POSTAL_ADDRESS (CAN-SPAM)"
        )
    return _passed("Postal address", settings.postal_address)


def _check_secrets(settings: Settings) -> list[CheckResult]:
    results = []
    if settings.secret_key in ("", DEFAULT_SECRET_KEY):
        results.append(
            _missing("Secret key", f"the default: set one made with `{GENERATE_SECRET}`")
        )
    elif weakness := secret_weakness(settings.secret_key):
        results.append(_missing("Secret key", f"too weak: {weakness}"))
    else:
        results.append(_passed("Secret key", "strong"))
    if settings.admin_token is None:
        results.append(_passed("Admin token", "unset: /admin answers 404"))
    elif weakness := secret_weakness(settings.admin_token):
        results.append(_missing("Admin token", f"too weak: {weakness}"))
    else:
        results.append(_passed("Admin token", "strong"))
    return results


def _check_bounce_address(settings: Settings) -> CheckResult:
    if not settings.bounce_address:
        return _missing("Bounce address", "unset: set NEWSLETTER_BOUNCE_ADDRESS")
    return _passed("Bounce address", settings.envelope_sender)


def _check_dkim_key(settings: Settings) -> tuple[CheckResult, DkimSigner | None]:
    try:
        signer = DkimSigner.from_settings(settings)
    except ConfigurationError as error:
        return _missing("DKIM key", str(error)), None
    if signer is None:
        return (
            _missing(
                "DKIM key", "unset: set NEWSLETTER_DKIM_SELECTOR and NEWSLETTER_DKIM_KEY_FILE"
            ),
            None,
        )
    record = f'{signer.dns_name} TXT "{signer.key.dns_value}"'
    return _passed("DKIM key", f"publish {record}"), signer


def _check_dns(
    settings: Settings, signer: DkimSigner | None, lookup: TxtLookup
) -> list[CheckResult]:
    domain = settings.sender_domain
    results = []
    try:
        spf = [text for text in lookup(domain) if text.lower().startswith("v=spf1")]
    except LookupUnavailableError as error:
        results.append(_unchecked("SPF record", error))
    else:
        results.append(
            _passed("SPF record", f"{domain}: {spf[0]}")
            if spf
            else _missing("SPF record", f"no v=spf1 TXT record at {domain}")
        )
    if signer is not None:
        results.append(_check_dkim_record(signer, lookup))
    try:
        dmarc = [text for text in lookup(f"_dmarc.{domain}") if text.startswith("v=DMARC1")]
    except LookupUnavailableError as error:
        results.append(_unchecked("DMARC record", error))
    else:
        results.append(
            _passed("DMARC record", f"_dmarc.{domain}: {dmarc[0]}")
            if dmarc
            else _missing("DMARC record", f"no v=DMARC1 TXT record at _dmarc.{domain}")
        )
    return results


def _public_key_of(record: str) -> str:
    tags = dict(part.strip().partition("=")[::2] for part in record.split(";") if "=" in part)
    return "".join(tags.get("p", "").split())


def _check_dkim_record(signer: DkimSigner, lookup: TxtLookup) -> CheckResult:
    try:
        published = [text for text in lookup(signer.dns_name) if "p=" in text]
    except LookupUnavailableError as error:
        return _unchecked("DKIM record", error)
    if not published:
        return _missing("DKIM record", f"no DKIM TXT record at {signer.dns_name}")
    if _public_key_of(published[0]) != _public_key_of(signer.key.dns_value):
        return _missing("DKIM record", f"{signer.dns_name} publishes a different public key")
    return _passed("DKIM record", f"{signer.dns_name} publishes this key")


def run_checks(
    settings: Settings, *, lookup_txt: TxtLookup, probe_url: UrlProbe
) -> list[CheckResult]:
    """Every check, in the order printed."""
    dkim_result, signer = _check_dkim_key(settings)
    return [
        _check_from_domain(settings),
        *_check_base_url(settings, probe_url),
        _check_postal_address(settings),
        *_check_secrets(settings),
        _check_bounce_address(settings),
        dkim_result,
        *_check_dns(settings, signer, lookup_txt),
    ]
