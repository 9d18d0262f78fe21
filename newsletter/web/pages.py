"""Rendering the site's pages from `templates/pages/` with the product's one jinja2 environment."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jinja2 import Environment
from starlette.responses import HTMLResponse, Response

from newsletter.core.settings import Settings

# Pages behind a signed link must not leak the token: not to other sites
# (Referer), not to caches, not to search engines.
PRIVATE_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Robots-Tag": "noindex, nofollow",
}


class PageRenderer:
    """Turns a page template and its context into an HTML response."""

    def __init__(self, env: Environment, settings: Settings) -> None:
        self._env = env
        self._site = {
            "list_name": settings.list_name,
            "postal_address": settings.postal_address,
            "topics": list(settings.topics),
        }
        self._constant: dict[str, str] = {}

    def render(
        self,
        page: str,
        *,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        private: bool = False,
        **context: Any,
    ) -> HTMLResponse:
        """The page `templates/pages/{page}.html.j2` filled with `context`."""
        template = self._env.get_template(f"pages/{page}.html.j2")
        body = template.render(site=self._site, **context)
        all_headers = dict(headers or {})
        if private:
            all_headers.update(PRIVATE_PAGE_HEADERS)
        return HTMLResponse(body, status_code=status_code, headers=all_headers)

    def fragment(self, name: str, **context: Any) -> str:
        """A piece of a page (`templates/pages/{name}.html.j2`) as HTML text, e.g. for a feed."""
        return self._env.get_template(f"pages/{name}.html.j2").render(site=self._site, **context)

    def constant(self, page: str, **context: Any) -> HTMLResponse:
        """A page that is the same for every request (its context never changes), rendered once."""
        body = self._constant.get(page)
        if body is None:
            body = self._env.get_template(f"pages/{page}.html.j2").render(
                site=self._site, **context
            )
            self._constant[page] = body
        return HTMLResponse(body)

    def asset(self, name: str, *, media_type: str) -> Response:
        """A static file kept among the page templates (`templates/pages/{name}.j2`), read once."""
        body = self._constant.get(name)
        if body is None:
            body = self._env.get_template(f"pages/{name}.j2").render()
            self._constant[name] = body
        return Response(body, media_type=media_type, headers={"Cache-Control": "max-age=3600"})

    def message(
        self,
        *,
        title: str,
        message: str,
        status_code: int,
        headers: Mapping[str, str] | None = None,
        private: bool = False,
        link_text: str | None = None,
        link_url: str | None = None,
    ) -> HTMLResponse:
        """A page with one heading, one explanation and an optional way on."""
        return self.render(
            "message",
            status_code=status_code,
            headers=headers,
            private=private,
            title=title,
            message=message,
            link_text=link_text,
            link_url=link_url,
        )
