"""One small router per concern; `subscribers.web.app` mounts them all."""
