"""Helpers the test modules share: local servers, databases and seeded rows.

Test modules import from here, never from one another.
"""
