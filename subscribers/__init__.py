"""The audience: the subscriber table, sign-up, confirmation, unsubscribe and preferences."""
