"""Folders a command may wipe: only those it made itself and marked as its own.

``orrery demo`` starts from a clean state folder. The folder comes from ``--state`` or
``ORRERY_STATE``, which a user may have pointed at a hub's real state; deleting it would
lose that hub's database without a word. So a wipe happens only when the folder holds the
marker file this module writes when it creates the folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from orrery.errors import InvalidInput

MARKER = ".orrery-owner"


def claim(folder: Path, owner: str) -> Path:
    """Make ``folder`` empty and marked as ``owner``'s.

    Creates it when missing; wipes it when it carries ``owner``'s marker; uses it as is
    when it exists and is empty; refuses (InvalidInput, nothing touched) otherwise.
    """
    folder = folder.resolve()
    marker = folder / MARKER
    if folder.exists():
        if not folder.is_dir():
            raise InvalidInput(f"state folder {folder} is a file, not a folder; choose another")
        mine = marker.is_file() and marker.read_text().strip() == owner
        if mine:
            shutil.rmtree(folder)
        elif any(folder.iterdir()):
            raise InvalidInput(
                f"state folder {folder} is not empty and was not made by `orrery {owner}`: "
                f"refusing to delete it (is ORRERY_STATE set for something else?). "
                f"Pass --state with a new folder, or empty it yourself"
            )
    folder.mkdir(parents=True, exist_ok=True)
    marker.write_text(owner + "\n")
    return folder
