"""Orrery spoke agent: reports one cluster's GPUs to the hub and runs the slices it assigns.

    agent      heartbeats, orders, the slice table, the lease        (asyncio)
    inventory  what GPUs this cluster has: a declared file, or NVML
    executor/  how a slice runs: ``local`` processes (each under a small supervisor that
               holds the lease), ``kubernetes`` Jobs, and ``fake`` for tests
    supervise  the supervisor process itself
"""
