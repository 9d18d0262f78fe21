"""URL rules: which outside URLs may become a link in an email or a page."""

from __future__ import annotations

from typing import Final

from newsletter.core.text import BIDI_CONTROLS, XML_INVALID

__all__ = ["MAX_URL_LENGTH", "web_url"]

# Longer URLs are not real repositories, project pages or thumbnails; refusing
# them keeps a database column and an email's size bounded.
MAX_URL_LENGTH: Final = 500


def web_url(value: object) -> str | None:
    """The value if it is a plausible http(s) link, else None.

    Never `javascript:`, `data:` and friends (they would become live links in
    an email); never spaces, control or invisible formatting characters, which
    no link needs, nor bidi overrides, which disguise where a link leads.
    """
    if not isinstance(value, str):
        return None
    url = value.strip()
    if not url.lower().startswith(("https://", "http://")):
        return None
    if (
        len(url) > MAX_URL_LENGTH
        or not url.isprintable()
        or " " in url
        or XML_INVALID.search(url)
        or BIDI_CONTROLS.search(url)
    ):
        return None
    return url
