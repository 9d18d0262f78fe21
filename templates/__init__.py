"""The email and page templates; installed as the package `newsletter.templates`."""
