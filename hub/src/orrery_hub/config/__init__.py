"""The hub's configuration: ``settings`` (``HubSettings``, from the command line) and
``queues`` (the queues file: weights, guarantees, cohorts)."""
