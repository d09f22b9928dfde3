"""Commands the hub adds to ``orrery``: ``orrery hub`` (``cli.hub``) and ``orrery policy``
(``cli.policy``)."""
