"""Typed identifiers shared by hub, spokes and clients.

They are plain strings and ints at run time; the types keep a job id from being passed
where a cluster name is expected.
"""

from typing import NewType

JobId = NewType("JobId", str)
ClusterName = NewType("ClusterName", str)
NodeName = NewType("NodeName", str)
SliceIndex = NewType("SliceIndex", int)
Epoch = NewType("Epoch", int)
