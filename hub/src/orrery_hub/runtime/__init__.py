"""The running hub's roles, mixed into ``orrery_hub.main.Hub``: reports in (``intake``,
with per-cluster ``lanes``), orders out (``orders``), the reconcile ``loop``, and what the
API calls (``service``, implementing ``api.protocol.HubApi``). ``parts`` declares the
state they share; ``inventory`` is the fleet as heartbeats describe it; ``metrics`` and
``scrape`` are what /metrics exports."""
