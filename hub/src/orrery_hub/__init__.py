"""Orrery hub: the REST API, the store, the inventory, the scheduler and the reconcile loop.

Layers, outermost first (an arrow means "may import"):

    cli / __main__  ->  service (asyncio: NATS, loops)  ->  store (SQLModel)
                              |                         ->  scheduler (pure)
                              v
                             api (FastAPI)

The scheduler imports no IO library at all; import-linter checks it.
"""
