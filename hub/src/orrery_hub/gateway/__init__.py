"""The inference gateway: an HTTP reverse proxy from ``/services/<name>/<path>`` to a
service's ready replicas (``proxy``), choosing by least outstanding requests (``pool``),
reporting its measured load to the hub and taking routes back (``sync``).

It talks to the hub only through the REST API, so it runs anywhere, as many times as
wanted; it imports nothing of the hub's store, scheduler or API (an import contract)."""
