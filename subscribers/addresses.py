"""When two addresses reach one mailbox: the key for suppressions and confirmation caps.

Anyone can write `victim+1@example.org`, `victim+2@…`: the `+tag` is the
mailbox owner's to choose, yet a stranger can use it too. So the rules that
protect a person (the suppression list, the cap on confirmation emails) key on
the mailbox, not on the exact address: case-folded, without its `+tag`, and
for Gmail also without dots (Gmail ignores them, and googlemail.com is the
same service).
"""

from __future__ import annotations

# Domains whose mailboxes ignore dots in the local part; both are one service.
_DOTLESS_DOMAINS = {"gmail.com": "gmail.com", "googlemail.com": "gmail.com"}


def mailbox_of(address: str) -> str:
    """The mailbox an address delivers to: `Ada.L+news@GMail.com` → `adal@gmail.com`."""
    local, _, domain = address.strip().rpartition("@")
    domain = domain.casefold().rstrip(".")
    local = local.casefold()
    untagged = local.split("+", 1)[0]
    if untagged:  # "+news@…" is its own mailbox, not the empty one
        local = untagged
    if domain in _DOTLESS_DOMAINS:
        local = local.replace(".", "") or local
        domain = _DOTLESS_DOMAINS[domain]
    return f"{local}@{domain}"


def domain_of(address: str) -> str:
    """The mail domain of an address, as `mailbox_of` spells it."""
    return mailbox_of(address).rpartition("@")[2]
