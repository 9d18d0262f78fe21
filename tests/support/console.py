"""Signing in to the console from a test, and reading the CSRF token of its pages."""

from __future__ import annotations

import re

import httpx

from tests.support.web import ADMIN_TOKEN

CONSOLE = "/admin/console"


def hidden_value(html: str, name: str) -> str:
    """The value of the page's first hidden input of that name."""
    match = re.search(rf'<input type="hidden" name="{name}" value="([^"]*)"', html)
    assert match, f"no hidden {name} field in the page"
    return match.group(1)


async def sign_in(client: httpx.AsyncClient, token: str = ADMIN_TOKEN) -> httpx.Response:
    """Post the sign-in form as a browser does (its nonce and cookie); the answer, unfollowed."""
    form = await client.get(f"{CONSOLE}/sign-in")
    assert form.status_code == 200, form.text
    return await client.post(
        f"{CONSOLE}/sign-in", data={"token": token, "nonce": hidden_value(form.text, "nonce")}
    )


async def signed_in_csrf(client: httpx.AsyncClient) -> str:
    """Sign in and return the CSRF token the console's forms carry."""
    answer = await sign_in(client)
    assert answer.status_code == 303, answer.text
    page = await client.get(f"{CONSOLE}/")
    assert page.status_code == 200, page.text
    return hidden_value(page.text, "csrf")
