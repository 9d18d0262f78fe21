"""The ground floor: settings, database, errors, clock, text rules, headers and MIME.

Everything else imports from here; nothing here imports anything above it.
"""
