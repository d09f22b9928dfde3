"""Read a policy folder from disk, and hold the set in force across reloads.

The IO half of the policy engine (``orrery_hub.policy`` is pure and never opens a file).
Who calls it: the hub at start and on reload (SIGHUP, ``POST /v1/policies:reload``), and
``orrery policy check --policies DIR``.

A folder's policy files are its ``*.yaml`` and ``*.yml`` files, not recursive, read in name
order; anything else (a README, ``schema.json``) is ignored.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from orrery.errors import InvalidInput, NotFound
from orrery_hub.policy import EMPTY, PolicySet, build_policy_set

SUFFIXES = (".yaml", ".yml")


def policy_files(folder: Path) -> list[Path]:
    if not folder.exists():
        raise NotFound(f"policy folder {folder}: no such folder")
    if not folder.is_dir():
        raise InvalidInput(f"policy folder {folder}: not a folder")
    return sorted(
        p
        for p in folder.iterdir()
        if p.suffix in SUFFIXES and p.is_file() and not p.name.startswith(".")
    )


def load_policies(folder: Path) -> PolicySet:
    """Every policy file in ``folder``, validated and compiled, or :class:`PolicyError`
    naming each file, line, field and reason (nothing is half loaded)."""
    contents: list[tuple[str, bytes]] = []
    for path in policy_files(folder):
        try:
            contents.append((str(path), path.read_bytes()))
        except OSError as exc:
            raise InvalidInput(f"{path}: cannot read ({exc.strerror})") from None
    return build_policy_set(contents)


@dataclass(frozen=True, slots=True)
class Reload:
    changed: bool  # the set in force is a new one
    policies: PolicySet  # the set in force after the attempt
    error: InvalidInput | NotFound | None  # why the new files were refused, if they were


class PolicyHolder:
    """The policy set in force. A reload that fails leaves the old set in force.

    Readers take ``holder.current`` once per decision (one attribute read, so a reload
    between two reads never mixes two sets inside a decision).
    """

    def __init__(self, folder: Path | None, initial: PolicySet | None = None) -> None:
        self.folder = folder
        self._lock = threading.Lock()  # one reload at a time; reads need no lock
        self.current: PolicySet = (
            initial
            if initial is not None
            else (load_policies(folder) if folder is not None else EMPTY)
        )

    def reload(self) -> Reload:
        with self._lock:
            if self.folder is None:
                return Reload(False, self.current, None)
            try:
                new = load_policies(self.folder)
            except (InvalidInput, NotFound) as exc:
                return Reload(False, self.current, exc)
            changed = new.digest != self.current.digest
            if changed:
                self.current = new
            return Reload(changed, self.current, None)
