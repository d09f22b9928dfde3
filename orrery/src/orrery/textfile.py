"""Reading a file a user named (a manifest, a policy): a clear error, never a traceback."""

from __future__ import annotations

from pathlib import Path

from orrery.errors import InvalidInput, NotFound


def read_text(path: Path, *, what: str = "file") -> str:
    """The file's text, or NotFound / InvalidInput saying what is wrong with the path."""
    try:
        return path.read_text()
    except FileNotFoundError:
        raise NotFound(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InvalidInput(f"{path}: is a folder, not a {what}") from None
    except UnicodeDecodeError:
        raise InvalidInput(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise InvalidInput(f"{path}: {exc.strerror}") from None
