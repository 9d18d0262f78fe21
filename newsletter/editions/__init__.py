"""Editions: one day's digest, its content (`content`) and its life (`lifecycle`)."""
