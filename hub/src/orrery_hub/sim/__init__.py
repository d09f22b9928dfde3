"""A discrete-event simulator that replays a GPU-cluster trace through the very same
``orrery_hub.scheduler.plan`` the hub runs, in simulated time: no sleeps, no NATS, no
database. ``orrery sim`` (``cli``) is its front door; ``engine`` its loop; ``trace`` and
``fleet`` its inputs; ``report`` its outputs.
"""
