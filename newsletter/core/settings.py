"""The one settings object, read from `NEWSLETTER_*` variables and `.env`.

It is built once at an entry point (CLI, web app factory, benchmark) and passed
down; nothing reads the environment anywhere else.
"""

from __future__ import annotations

import ipaddress
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Self

from pydantic import Field, FilePath, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from newsletter.core.errors import ConfigurationError
from newsletter.core.headers import split_mailbox_setting
from newsletter.core.resources import templates_path

DEFAULT_SECRET_KEY = "change-me"
# 32 characters of a random URL-safe alphabet carry about 190 bits; 43 (below) carry 256.
MIN_SECRET_LENGTH = 32
MIN_DISTINCT_SECRET_CHARACTERS = 8
# A DKIM selector or domain goes into DNS names and the signature header: plain ASCII labels.
DNS_NAME_PATTERN = r"^[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9])?$"
GENERATE_SECRET = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'


def secret_weakness(value: str) -> str | None:
    """Why a secret is too weak to sign links or guard /admin in production, or None."""
    if len(value) < MIN_SECRET_LENGTH:
        unit = "character" if len(value) == 1 else "characters"
        return f"it is {len(value)} {unit} long, not the {MIN_SECRET_LENGTH} needed"
    repeats = any(value[period:] == value[:-period] for period in range(1, len(value) // 2 + 1))
    if repeats or len(set(value)) < MIN_DISTINCT_SECRET_CHARACTERS:
        return "it repeats a few characters instead of being random"
    return None


class SmtpSecurity(StrEnum):
    """How the SMTP connection is protected."""

    NONE = "none"
    STARTTLS = "starttls"
    TLS = "tls"


class ImapSecurity(StrEnum):
    """How the connection to the bounce mailbox is protected."""

    TLS = "tls"
    STARTTLS = "starttls"
    # Only to a server on this machine: the password would otherwise cross the network in clear.
    NONE = "none"


LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
# Printable ASCII, sent quoted in IMAP commands (other names would need modified UTF-7).
IMAP_MAILBOX_PATTERN = r"^[\x20-\x7e]{1,200}$"
# arn:aws:sns:REGION:ACCOUNT:TOPIC (other partitions, such as aws-cn, too).
SNS_TOPIC_ARN_PATTERN = r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_.-]{1,256}$"


class Environment(StrEnum):
    """Development allows insecure defaults; production refuses them."""

    DEVELOPMENT = "development"
    PRODUCTION = "production"


class Settings(BaseSettings):
    """Every knob of the product, documented one by one in `.env.example`."""

    model_config = SettingsConfigDict(
        env_prefix="NEWSLETTER_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        # `NEWSLETTER_ADMIN_TOKEN=` in .env means unset, not an empty token.
        env_ignore_empty=True,
    )

    environment: Environment = Environment.DEVELOPMENT
    database_url: str = "sqlite:///./newsletter.core.db"

    smtp_host: str = "localhost"
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_security: SmtpSecurity = SmtpSecurity.NONE
    # A CA certificate (PEM) to trust besides the system's, for a relay whose
    # certificate a private CA signed (or a self-signed one).
    smtp_ca_file: FilePath | None = None
    smtp_timeout_seconds: float = Field(default=30.0, gt=0)
    smtp_concurrency: int = Field(default=4, ge=1, le=256)
    # Extra relays ("host:port" each) share the load with the main one.
    smtp_extra_relays: Annotated[list[str], NoDecode] = Field(default_factory=list)
    send_rate_per_second: float = Field(default=0.0, ge=0)  # 0 = unlimited
    send_rate_per_hour: float = Field(default=0.0, ge=0)  # 0 = unlimited
    send_max_attempts: int = Field(default=5, ge=1)
    send_retry_base_seconds: float = Field(default=30.0, ge=0)
    send_lease_seconds: float = Field(default=300.0, gt=0)
    send_batch_size: int = Field(default=500, ge=1)
    send_failure_window: int = Field(default=200, ge=1)
    send_failure_threshold: float = Field(default=0.5, gt=0, le=1)

    list_name: str = "Daily ML Papers"
    from_address: str = "Daily ML Papers <digest@localhost>"
    reply_to: str | None = None
    list_id: str = "Daily ML Papers <daily-papers.localhost>"
    unsubscribe_mailto: str | None = None
    base_url: str = "http://localhost:8000"
    secret_key: str = DEFAULT_SECRET_KEY
    admin_token: str | None = None
    postal_address: str = "Daily ML Papers, 1 Example Street, 00000 Example City"
    # The envelope sender (MAIL FROM) of every digest, made per delivery into the VERP
    # address local+TOKEN@domain; `newsletter bounces serve` is the MX of its domain.
    # Unset: the From address, and no bounce is matched to its delivery.
    bounce_address: str | None = None
    # Soft bounces (4.x.x, delayed) of one mailbox: this many within this many days
    # make the reader bounced as a hard bounce does.
    soft_bounce_limit: int = Field(default=3, ge=1)
    soft_bounce_days: int = Field(default=14, ge=1)
    # The largest report `newsletter bounces serve` accepts (a bounce quotes our digest).
    bounce_max_bytes: int = Field(default=2 * 1024 * 1024, ge=64 * 1024)
    # DKIM signing: both set, or neither. The key is a PEM RSA or ed25519 private key;
    # the signing domain is the From domain unless NEWSLETTER_DKIM_DOMAIN overrides it.
    dkim_selector: str | None = Field(default=None, pattern=DNS_NAME_PATTERN)
    dkim_key_file: FilePath | None = None
    dkim_domain: str | None = Field(default=None, pattern=DNS_NAME_PATTERN)
    # `newsletter bounces fetch`: the IMAP mailbox where the relay leaves bounces and
    # complaints. The port defaults to 993 with tls, 143 otherwise.
    bounce_imap_host: str | None = None
    bounce_imap_port: int | None = Field(default=None, ge=1, le=65535)
    bounce_imap_security: ImapSecurity = ImapSecurity.TLS
    bounce_imap_user: str | None = None
    bounce_imap_password: str | None = None
    bounce_imap_mailbox: str = Field(default="INBOX", pattern=IMAP_MAILBOX_PATTERN)
    bounce_imap_ca_file: FilePath | None = None
    bounce_imap_timeout_seconds: float = Field(default=30.0, gt=0)
    # `POST /hooks/ses`: the SNS topics whose notifications are accepted (none: the hook
    # answers 404), an optional shared secret, and whether subscriptions confirm themselves.
    ses_topic_arns: Annotated[list[str], NoDecode] = Field(default_factory=list)
    ses_hook_secret: str | None = None
    ses_confirm_subscriptions: bool = True

    top_n: int = Field(default=10, ge=1, le=100)
    timezone: str = "UTC"
    hf_api_url: str = "https://huggingface.co/api/daily_papers"
    arxiv_feed_url: str = "https://rss.arxiv.org/rss"
    arxiv_categories: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["cs.LG", "cs.CL", "cs.CV", "cs.AI"]
    )
    http_timeout_seconds: float = Field(default=20.0, gt=0)
    http_retries: int = Field(default=3, ge=0)

    topics: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [
            "LLMs",
            "Diffusion",
            "Computer vision",
            "Robotics",
            "Reinforcement learning",
            "Speech and audio",
            "Theory",
        ]
    )
    # What each topic means for personal ranking (description, keywords, arXiv
    # categories); unset: the shipped newsletter/relevance/topics.json.
    topics_file: Path | None = None
    confirm_token_max_age_seconds: int = Field(default=7 * 24 * 3600, ge=60)
    confirm_resend_interval_seconds: int = Field(default=3600, ge=0)
    # The largest CSV `POST /admin/subscribers/import` accepts (other bodies stay tiny).
    import_max_bytes: int = Field(default=50 * 1024 * 1024, ge=1024)
    signup_rate_limit: int = Field(default=5, ge=1)
    signup_rate_window_seconds: int = Field(default=3600, ge=1)
    # Confirmation emails per mailbox (address without +tag) and per domain, per window;
    # shared providers (Gmail, Outlook, ...) get their own, larger, domain cap.
    confirm_mailbox_limit: int = Field(default=3, ge=1)
    confirm_mailbox_window_seconds: int = Field(default=24 * 3600, ge=1)
    confirm_domain_limit: int = Field(default=50, ge=1)
    confirm_shared_domain_limit: int = Field(default=1000, ge=1)
    confirm_domain_window_seconds: int = Field(default=3600, ge=1)
    confirm_shared_domains: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [
            "gmail.com",
            "outlook.com",
            "hotmail.com",
            "live.com",
            "yahoo.com",
            "icloud.com",
            "me.com",
            "aol.com",
            "proton.me",
            "protonmail.com",
            "gmx.de",
            "gmx.net",
            "web.de",
            "yandex.ru",
            "mail.ru",
            "qq.com",
            "163.com",
        ]
    )
    # Reverse proxies (IPs or CIDR networks) whose X-Forwarded-For names the client.
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # Default: the templates installed with the package (the checkout's templates/).
    templates_dir: Path = Field(default_factory=templates_path)
    # The interactive API docs (/docs) and the schema (/openapi.json); unset: on in
    # development, off in production (they list every /admin operation).
    api_docs: bool | None = None

    @field_validator(
        "smtp_extra_relays",
        "arxiv_categories",
        "topics",
        "trusted_proxies",
        "confirm_shared_domains",
        "ses_topic_arns",
        mode="before",
    )
    @classmethod
    def _split_comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _check_networks(cls, value: list[str]) -> list[str]:
        networks = []
        for item in value:
            try:
                networks.append(str(ipaddress.ip_network(item, strict=False)))
            except ValueError:
                raise ValueError(
                    f"{item!r} is not an IP address or CIDR network (host names are not supported)"
                ) from None
        return networks

    @field_validator("ses_topic_arns")
    @classmethod
    def _check_topic_arns(cls, value: list[str]) -> list[str]:
        for item in value:
            if not re.fullmatch(SNS_TOPIC_ARN_PATTERN, item):
                raise ValueError(
                    f"{item!r} is not an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:TOPIC)"
                )
        return value

    @field_validator("base_url")
    @classmethod
    def _strip_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("bounce_address")
    @classmethod
    def _check_bounce_address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        local, at, domain = split_mailbox_setting(value)[1].rpartition("@")
        if not at or not local or not domain or not value.isascii() or "+" in local:
            raise ValueError(
                f"{value!r} must be a plain ASCII address such as bounces@bounces.example.org "
                "(no +tag: each digest adds its own)"
            )
        return value

    @model_validator(mode="after")
    def _dkim_selector_and_key_together(self) -> Self:
        if (self.dkim_selector is None) != (self.dkim_key_file is None):
            raise ValueError(
                "NEWSLETTER_DKIM_SELECTOR and NEWSLETTER_DKIM_KEY_FILE go together: set both to "
                "sign with DKIM, or neither"
            )
        return self

    @model_validator(mode="after")
    def _plain_imap_only_on_this_machine(self) -> Self:
        host = (self.bounce_imap_host or "").strip("[]").lower()
        if self.bounce_imap_security is ImapSecurity.NONE and host not in LOOPBACK_HOSTS:
            raise ValueError(
                "NEWSLETTER_BOUNCE_IMAP_SECURITY=none sends the password in clear: it is allowed "
                "only with NEWSLETTER_BOUNCE_IMAP_HOST=localhost, 127.0.0.1 or ::1; use tls or "
                "starttls"
            )
        return self

    @model_validator(mode="after")
    def _refuse_insecure_production(self) -> Self:
        if self.environment is not Environment.PRODUCTION:
            return self
        problems = []
        if self.secret_key in ("", DEFAULT_SECRET_KEY):
            problems.append("NEWSLETTER_SECRET_KEY is unset or the default")
        elif weakness := secret_weakness(self.secret_key):
            problems.append(f"NEWSLETTER_SECRET_KEY is too weak for production: {weakness}")
        if self.admin_token is not None and (weakness := secret_weakness(self.admin_token)):
            problems.append(f"NEWSLETTER_ADMIN_TOKEN is too weak for production: {weakness}")
        if self.ses_hook_secret is not None and (weakness := secret_weakness(self.ses_hook_secret)):
            problems.append(f"NEWSLETTER_SES_HOOK_SECRET is too weak for production: {weakness}")
        if problems:
            raise ValueError(
                f"{'; '.join(problems)}; set a long random value, made with `{GENERATE_SECRET}`"
            )
        return self

    @property
    def api_docs_enabled(self) -> bool:
        """Whether /docs and /openapi.json are served."""
        if self.api_docs is None:
            return self.environment is Environment.DEVELOPMENT
        return self.api_docs

    @property
    def sender_domain(self) -> str:
        """The domain of the From address, used in Message-IDs."""
        address = split_mailbox_setting(self.from_address)[1]
        return address.rpartition("@")[2] or "localhost"

    @property
    def envelope_sender(self) -> str:
        """The SMTP envelope sender (MAIL FROM): the bounce address, else the From address."""
        if self.bounce_address:
            return split_mailbox_setting(self.bounce_address)[1]
        return split_mailbox_setting(self.from_address)[1]

    @property
    def bounce_imap_port_or_default(self) -> int:
        """The bounce mailbox's port: the setting, else 993 for tls and 143 otherwise."""
        if self.bounce_imap_port is not None:
            return self.bounce_imap_port
        return 993 if self.bounce_imap_security is ImapSecurity.TLS else 143

    @property
    def bounce_mailbox(self) -> tuple[str, str] | None:
        """The bounce address's local part and domain (lower case), or None when unset."""
        if not self.bounce_address:
            return None
        local, _, domain = split_mailbox_setting(self.bounce_address)[1].rpartition("@")
        return local.lower(), domain.lower()

    @property
    def dkim_signing_domain(self) -> str:
        """The DKIM d= domain: NEWSLETTER_DKIM_DOMAIN, else the From domain."""
        return self.dkim_domain or self.sender_domain


def load_settings(**overrides: object) -> Settings:
    """Build the settings from the environment, turning validation errors into one line."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        problems = "; ".join(
            f"NEWSLETTER_{'_'.join(str(p) for p in e['loc']).upper() or 'SETTINGS'}: {e['msg']}"
            if e["loc"]
            else e["msg"].removeprefix("Value error, ")
            for e in error.errors()
        )
        raise ConfigurationError(f"invalid configuration: {problems}") from None


def settings_environment(settings: Settings) -> dict[str, str]:
    """The `NEWSLETTER_*` variables that build these same settings in a child process.

    Lists are joined with commas, as they are read. An unset (None) value
    gets no variable, so the child falls back to `.env` exactly as the parent did.
    """
    variables: dict[str, str] = {}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, list):
            text = ",".join(str(item) for item in value)
        elif isinstance(value, StrEnum):
            text = value.value
        else:
            text = str(value)
        variables[f"NEWSLETTER_{name.upper()}"] = text
    return variables
