"""Orrery hub: the REST API, the store, the inventory, the scheduler and the reconcile loop.

Grouped by role; an arrow means "may import" (import-linter's ``layers`` contract in
pyproject.toml checks it, highest first):

    cli | sim                         commands
    main                              composition root: builds and runs the Hub
    runtime | console                 reports in, orders out, the loop, the API's service
    api                               routes over the ``HubApi`` Protocol
    admission                         deliverable? within policy? (gate, usage)
    apply                             snapshot out of the store, plan back into it
    reconcile                         reports and failures -> desired state
    config                            settings, queues
    auth | identity                   tokens and roles; cluster CA and enrollment
    store                             tables, queries, the store thread
    policy | scheduler                pure: no IO, no clock, no database
"""
