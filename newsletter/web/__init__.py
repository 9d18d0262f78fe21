"""The web side of the audience: sign-up, confirmation, unsubscribe, preferences, admin, archive."""

from newsletter.web.app import create_app, serve

__all__ = ["create_app", "serve"]
