"""One small router per concern; `newsletter.web.app` mounts them all."""
