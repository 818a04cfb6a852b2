"""What every side shares: migrations, job payloads, error codes, status enums, settings, queries.

Nothing in this package imports Playwright or holds key material.
"""
