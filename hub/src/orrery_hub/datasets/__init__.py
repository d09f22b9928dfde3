"""Datasets in the hub, around the pure parts (``scheduler.data``, ``policy.residency``):

placement.py   what a pass weighs: datasets, where they are cached, residency, links
orders.py      what an assignment carries: where to copy each dataset from, and the
               slice's shard range; a job naming an unknown dataset is refused
status.py      what a job's status shows: staging progress per cluster, the options
               placement weighed
"""
