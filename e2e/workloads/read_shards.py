"""A slice that reads its shards of a staged dataset and records what it read.

    read_shards.py --out DIR --dataset NAME [--hold-until FILE]

Writes DIR/slice-<ORRERY_SLICE>.json: the dataset's path (ORRERY_DATA_<NAME>), its shard
range (ORRERY_DATA_SHARDS), the files it read (the range's entries of the sorted listing)
and their bytes. With --hold-until it then waits for FILE to exist (at most 120 s), so a
test can keep the dataset in use.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path

p = argparse.ArgumentParser()
p.add_argument("--out", required=True)
p.add_argument("--dataset", required=True)
p.add_argument("--hold-until")
a = p.parse_args()

var = "ORRERY_DATA_" + re.sub(r"[^A-Z0-9]", "_", a.dataset.upper())
root = Path(os.environ[var])
start, end = (int(x) for x in os.environ["ORRERY_DATA_SHARDS"].split(":"))
listing = sorted(f.name for f in root.iterdir())
mine = listing[start:end]
size = sum(len((root / f).read_bytes()) for f in mine)
out = Path(a.out)
out.mkdir(parents=True, exist_ok=True)
record = {
    "slice": int(os.environ["ORRERY_SLICE"]),
    "root": str(root),
    "shards": [start, end],
    "files": mine,
    "bytes": size,
    "all": len(listing),
}
(out / f"slice-{record['slice']}.json").write_text(json.dumps(record))
if a.hold_until:
    deadline = time.monotonic() + 120
    while not Path(a.hold_until).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
