"""What the local executor needs from the host: the slice user, a cgroup to track slices
in, and paths built only from ids that cannot climb out of the state folder."""

from __future__ import annotations

import hashlib
import logging
import os
import pwd
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from orrery.errors import InvalidInput
from orrery.wire import SliceKey

log = logging.getLogger("orrery.spoke.local")

# A job id as the hub makes it and a DNS label as users name things: nothing else may become
# a path component (``..``, ``/``, NUL, a 2,000-digit epoch).
_JOB_ID = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
MAX_INDEX = 2**31 - 1
MAX_EPOCH = 2**63 - 1
TRACKING_MODES = ("auto", "cgroup", "pgroup")


class UnsafeKey(ValueError):
    """A slice key that cannot name a folder safely."""


def attempt_name(key: SliceKey) -> tuple[str, str, str]:
    """The path components of an attempt, or UnsafeKey naming the field."""
    if not _JOB_ID.fullmatch(key.job):
        raise UnsafeKey(f"job {key.job[:80]!r} is not a DNS label")
    if not 0 <= key.index <= MAX_INDEX:
        raise UnsafeKey(f"slice index {str(key.index)[:40]} is out of range")
    if not 0 <= key.epoch <= MAX_EPOCH:
        raise UnsafeKey(f"epoch {str(key.epoch)[:40]} is out of range")
    return key.job, str(key.index), str(key.epoch)


@dataclass(frozen=True)
class SliceUser:
    """The account slices run as. ``switch``: the agent must change to it (it is root)."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    switch: bool


def resolve_slice_user(run_as: str | None, *, allow_root: bool) -> SliceUser:
    """The account slices will run as; InvalidInput (one line, naming the flag) if unsafe.

    Default: the agent's own account — refused when that is root, unless ``allow_root``."""
    euid = os.geteuid()
    if run_as is None:
        entry = pwd.getpwuid(euid)
    else:
        try:
            entry = pwd.getpwnam(run_as) if not run_as.isdigit() else pwd.getpwuid(int(run_as))
        except KeyError:
            raise InvalidInput(f"--run-as: no such user {run_as!r}") from None
    if entry.pw_uid == 0 and not allow_root:
        raise InvalidInput(
            "--run-as: slices would run as root; name an unprivileged user "
            "(e.g. --run-as nobody) or pass --allow-root-slices"
        )
    switch = entry.pw_uid != euid
    if switch and euid != 0:
        raise InvalidInput(
            f"--run-as: the agent must run as root to start slices as {entry.pw_name!r}"
        )
    groups = tuple(sorted(set(os.getgrouplist(entry.pw_name, entry.pw_gid))))
    return SliceUser(entry.pw_name, entry.pw_uid, entry.pw_gid, groups, switch)


def check_reachable(folder: Path, user: SliceUser) -> None:
    """Every folder above ``folder`` must let the slice user through (search permission)."""
    if not user.switch:
        return
    for d in [folder, *folder.parents]:
        st = d.stat()
        if st.st_uid == user.uid:
            bit = stat.S_IXUSR
        elif st.st_gid in user.groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            raise InvalidInput(
                f"--state: slice user {user.name!r} cannot reach {folder} "
                f"({d} is mode {stat.S_IMODE(st.st_mode):o}); use a state folder it can traverse"
            )


def _cgroup2_mount() -> Path | None:
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        left, sep, right = line.partition(" - ")
        if sep and right.split()[0] == "cgroup2":
            return Path(left.split()[4])
    return None


def _own_cgroup() -> str | None:
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                return line[3:]
    except OSError:
        pass
    return None


def cgroup_path(state_dir: Path) -> Path | None:
    """Where this agent's slice cgroups go (one parent per state folder, so several agents
    on one host never share them); None when the host has no cgroup2 file system."""
    mount, own = _cgroup2_mount(), _own_cgroup()
    if mount is None or own is None:
        return None
    tag = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:12]
    return mount / own.strip("/") / f"orrery-{tag}"


def cgroup_parent(state_dir: Path, mode: str) -> Path | None:
    """The cgroup (v2) folder this agent creates one child per slice in, or None: process
    groups it is. ``mode`` auto tries, cgroup insists, pgroup never tries."""
    if mode not in TRACKING_MODES:
        raise InvalidInput(f"--slice-tracking: {mode!r} is not one of {', '.join(TRACKING_MODES)}")
    if mode == "pgroup":
        return None
    parent = cgroup_path(state_dir)
    why = "no cgroup2 file system is mounted"
    if parent is not None:
        try:
            parent.mkdir(exist_ok=True)
            (parent / "cgroup.procs").stat()
            probe = parent / "probe"
            probe.mkdir(exist_ok=True)
            probe.rmdir()
            return parent
        except OSError as exc:
            why = f"cannot create cgroups under {parent.parent}: {exc.strerror}"
    if mode == "cgroup":
        raise InvalidInput(f"--slice-tracking: cgroup: {why}")
    log.warning("tracking slices by process group and subreaper: %s", why)
    return None


def private_dir(path: Path, owner: SliceUser | None = None) -> None:
    """A folder only its owner may enter (0700), created if missing."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    if owner is not None and owner.switch:
        os.chown(path, owner.uid, owner.gid)


def read_small(path: Path, limit: int = 64 * 1024) -> bytes | None:
    """A file the workload may control, read without following a link and up to a bound."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = os.read(fd, limit + 1)
        return data if len(data) <= limit else None
    finally:
        os.close(fd)
