"""Hosting operations: webhooks, live events (SSE), Prometheus metrics and scheduled backups.

Each is an event plugin of the public event hooks (``hookspecs.EventSpec``) or a background loop
of the core; ``Operations`` (``ops.runtime``) starts and stops them with the server.
"""
