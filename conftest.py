"""The order test files are handed to the parallel workers (``./dev test``: pytest-xdist,
``--dist loadfile --no-loadscope-reorder``): the longest first, so that no long file is
left to start when the others are nearly done and one worker runs on alone.

xdist's own reordering (by number of tests per file) put files of many quick tests first
and the e2e files, a few tests of half a minute each, last: the suite took 11.4 minutes
where its tests add up to 29 minutes on 3 workers. The list is measured
(``./dev test --durations=0``, seconds a file took on one worker on this project's 2-core
machine); files not in it follow in collection order. A file missing from the list, or
gone, only changes the order.
"""

from __future__ import annotations

import pytest

LONGEST_FIRST = [
    "e2e/test_security.py",  # 115 s
    "e2e/test_slice_escape.py",  # 100 s
    "e2e/test_resilience.py",  # 100 s
    "e2e/test_datasets.py",  # 76 s
    "e2e/test_first_hour.py",  # 73 s
    "e2e/test_readme_commands.py",  # 73 s
    "e2e/test_serving.py",  # 72 s
    "e2e/test_ha.py",  # 63 s
    "e2e/test_torch.py",  # 61 s
    "tests/test_cli.py",  # 59 s
    "tests/test_cli_tokens.py",  # 56 s
    "e2e/test_quickstart.py",  # 54 s
    "tests/test_cli_kubectl.py",  # 49 s
    "e2e/test_serving_lifecycle.py",  # 46 s
    "e2e/test_console.py",  # 42 s
    "tests/hub/test_heartbeat_ack.py",  # 40 s
    "tests/test_cli_follow.py",  # 39 s
    "e2e/test_kube_federation.py",  # 36 s
    "tests/hub/test_fuzz_api.py",  # 34 s
    "e2e/test_policies.py",  # 33 s
    "e2e/test_partition.py",  # 33 s
    "e2e/test_lifecycle.py",  # 31 s
    "e2e/test_loop.py",  # 28 s
    "tests/hub/test_reconcile.py",  # 27 s
    "e2e/test_logs.py",  # 26 s
    "tests/test_first_hour.py",  # 26 s
    "e2e/test_signed_orders.py",  # 23 s
    "tests/hub/test_sim_sweep.py",  # 21 s
    "tests/spoke/test_kube_executor.py",  # 19 s
    "e2e/test_preemption.py",  # 18 s
    "e2e/test_secrets.py",  # 18 s
    "tests/hub/test_scheduler_waitlist.py",  # 16 s
    "tests/test_cli_startup.py",  # 15 s
    "tests/hub/test_authz.py",  # 15 s
    "tests/hub/test_sim.py",  # 14 s
    "tests/hub/test_policy_property.py",  # 14 s
    "tests/hub/test_api.py",  # 11 s
    "tests/test_architecture.py",  # 11 s
    "tests/hub/test_hostile_input.py",  # 11 s
    "tests/hub/test_sim_serving.py",  # 10 s
]


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    # A stable sort: the tests of one file keep their order, and unlisted files theirs.
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))
