"""Datasets staged into this cluster's cache before the slices that read them start.

stager.py   Stager: stage a dataset once (however many slices wait for it), count who
            reads it, report the cache in each heartbeat
cache.py    what the cache holds and which entries to evict (pure: no IO)
copy.py     the copy itself: an object-store prefix into a folder, with obstore
"""

from orrery_spoke_agent.staging.cache import CacheEntry, evictions
from orrery_spoke_agent.staging.stager import Stager, StagingError

__all__ = ["CacheEntry", "Stager", "StagingError", "evictions"]
