"""`newsletter check`: one line per thing a bulk sender needs, and what is missing."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path

import dns.resolver
import pytest

from newsletter.core.deliverability import (
    CheckResult,
    CheckStatus,
    LookupUnavailableError,
    http_probe,
    run_checks,
    txt_lookup_with,
)
from newsletter.core.dkim import load_dkim_key
from newsletter.core.settings import Settings, load_settings
from tests.support.cli import run_cli
from tests.support.dkim_keys import write_key

STRONG = "q8Vn3xK0pL7zR2mW9sT4yB6cD1fG5hJ-aE"
DOMAIN = "news.example.org"


def good_settings(tmp_path: Path, kind: str = "rsa") -> Settings:
    """A configuration that has everything, with a fresh DKIM key."""
    return load_settings(
        _env_file=None,
        from_address=f"Daily ML Papers <digest@{DOMAIN}>",
        base_url=f"https://{DOMAIN}",
        postal_address="Daily ML Papers, 5 Real Road, 12345 Berlin",
        secret_key=STRONG,
        admin_token=STRONG[::-1],
        bounce_address=f"bounces@{DOMAIN}",
        dkim_selector="daily",
        dkim_key_file=write_key(tmp_path, kind),
    )


def fake_dns(records: dict[str, list[str]]) -> Callable[[str], list[str]]:
    """A TXT lookup answering from a mapping: unknown names have no records."""
    return lambda name: records.get(name, [])


def unreachable(name: str) -> list[str]:
    raise LookupUnavailableError("no network here")


def by_name(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {result.name: result for result in results}


def test_a_good_configuration_passes_and_prints_the_dkim_record(tmp_path: Path) -> None:
    settings = good_settings(tmp_path)
    key = load_dkim_key(settings.dkim_key_file)  # type: ignore[arg-type]
    dns = {
        DOMAIN: ["v=spf1 include:_spf.example.net -all", "google-site-verification=x"],
        f"daily._domainkey.{DOMAIN}": [key.dns_value],
        f"_dmarc.{DOMAIN}": ["v=DMARC1; p=quarantine"],
    }

    results = run_checks(settings, lookup_txt=fake_dns(dns), probe_url=lambda url: 200)

    assert [r for r in results if r.status is not CheckStatus.PASSED] == []
    record = by_name(results)["DKIM key"].detail
    assert record == f'publish daily._domainkey.{DOMAIN} TXT "{key.dns_value}"'
    assert key.dns_value.startswith("v=DKIM1; k=rsa; p=MII")
    assert by_name(results)["DKIM record"].detail.endswith("publishes this key")


def test_an_ed25519_key_gets_an_ed25519_record(tmp_path: Path) -> None:
    settings = good_settings(tmp_path, "ed25519")
    results = by_name(run_checks(settings, lookup_txt=unreachable, probe_url=lambda url: 200))
    assert 'TXT "v=DKIM1; k=ed25519; p=' in results["DKIM key"].detail


def test_a_published_key_that_differs_is_missing(tmp_path: Path) -> None:
    settings = good_settings(tmp_path)
    other = load_dkim_key(write_key(tmp_path / "other", "ed25519")).dns_value
    dns = {f"daily._domainkey.{DOMAIN}": [other]}
    results = by_name(run_checks(settings, lookup_txt=fake_dns(dns), probe_url=lambda url: 200))
    assert results["DKIM record"].status is CheckStatus.MISSING
    assert results["SPF record"].status is CheckStatus.MISSING
    assert results["DMARC record"].status is CheckStatus.MISSING


def test_offline_checks_are_left_open_not_failed(tmp_path: Path) -> None:
    def offline_probe(url: str) -> int:
        raise LookupUnavailableError("no network here")

    results = run_checks(good_settings(tmp_path), lookup_txt=unreachable, probe_url=offline_probe)

    unchecked = {r.name for r in results if r.status is CheckStatus.UNCHECKED}
    assert unchecked == {"Base URL reachable", "SPF record", "DKIM record", "DMARC record"}
    assert not [r for r in results if r.status is CheckStatus.MISSING]
    assert all("could not check" in by_name(results)[name].detail for name in unchecked)


def closed_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_real_resolver_reports_a_dead_dns_server_as_could_not_check() -> None:
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = closed_udp_port()
    resolver.lifetime = resolver.timeout = 0.5
    lookup = txt_lookup_with(resolver)

    with pytest.raises(LookupUnavailableError, match="DNS did not answer"):
        lookup(DOMAIN)


def test_the_real_probe_reports_a_dead_server_as_could_not_check() -> None:
    with pytest.raises(LookupUnavailableError, match="no answer"):
        http_probe("https://127.0.0.1:1/")


def test_a_bad_status_from_the_base_url_is_missing(tmp_path: Path) -> None:
    results = run_checks(good_settings(tmp_path), lookup_txt=unreachable, probe_url=lambda u: 502)
    assert by_name(results)["Base URL reachable"].status is CheckStatus.MISSING


def test_the_command_lists_everything_missing_and_fails(cli_env: dict[str, str]) -> None:
    env = {
        **cli_env,
        "NEWSLETTER_FROM_ADDRESS": "Daily ML Papers <digest@localhost>",
        "NEWSLETTER_BASE_URL": "http://localhost:8000",
        "NEWSLETTER_SECRET_KEY": "change-me",
        "NEWSLETTER_ADMIN_TOKEN": "short",
    }

    result = run_cli("check", env=env, check=False)

    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    for name in (
        "From domain",
        "Base URL",
        "Postal address",
        "Secret key",
        "Admin token",
        "Bounce address",
        "DKIM key",
    ):
        assert any(line.startswith(f"✗ {name}:") for line in lines), (name, lines)

    as_json = run_cli("check", "--json", env=env, check=False)
    assert as_json.returncode == 1
    statuses = {item["check"]: item["status"] for item in json.loads(as_json.stdout)}
    assert statuses["Bounce address"] == "missing" and statuses["Admin token"] == "missing"
