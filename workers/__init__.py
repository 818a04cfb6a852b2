"""Dramatiq actors and what they hold: broker wiring, browser pool, live view, keys, metrics."""
