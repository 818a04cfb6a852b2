"""Development tooling: demo, fixture site, scripted user, benchmarks.

Never imported by the runtime and not in the worker image."""
