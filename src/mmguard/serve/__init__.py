"""Serving a fitted guard over HTTP and WebSocket (``mmguard serve``; docs/serve.md).

One module per job:

* :mod:`~mmguard.serve.app` — ``create_app(guard_dir, settings) -> FastAPI``: routes, error handlers;
* :mod:`~mmguard.serve.service` — the loaded guard behind the routes (decode, admit, call, count);
* :mod:`~mmguard.serve.codec` — JSON / NPZ bodies in and out, every request check;
* :mod:`~mmguard.serve.batching` — dynamic micro-batching, bounded queue, one inference thread;
* :mod:`~mmguard.serve.stream` — the WebSocket stream with a drift monitor per connection;
* :mod:`~mmguard.serve.auth` — optional bearer token, compared in constant time;
* :mod:`~mmguard.serve.metrics` — Prometheus metrics;
* :mod:`~mmguard.serve.settings`, :mod:`~mmguard.serve.problems` — settings; one-line 4xx errors.

Nothing here is imported by the rest of mmguard (an import-linter contract), and FastAPI is only
imported when a service is built, so the package works without the ``serve`` extra.
"""
