"""Secrets a plain host holds for its slices: files under the spoke's ``--secrets-dir``.

``{secretRef: NAME}`` reads the file ``NAME``; with ``key: K``, the file ``NAME/K``. Only
the names travel; a missing secret fails the launch with a reason naming the secret and
the variable, never a value. Files are read at launch and handed to the slice's
environment only.
"""

from __future__ import annotations

import os
from pathlib import Path

from orrery.wire import Assignment

MAX_SECRET_BYTES = 64 * 1024


class MissingSecret(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def resolve(a: Assignment, secrets_dir: Path | None) -> dict[str, str]:
    """The value of each secret variable of ``a``; ``MissingSecret`` names the first absent."""
    out: dict[str, str] = {}
    for var, ref in sorted((a.secret_env or {}).items()):
        what = f"secret {ref.name!r}" + (f" key {ref.key!r}" if ref.key else "")
        if secrets_dir is None:
            raise MissingSecret(
                f"{what} (for {var}): this spoke holds no secrets (start it with --secrets-dir)"
            )
        if ref.key in (".", ".."):
            raise MissingSecret(f"{what} (for {var}): not a valid key")
        path = secrets_dir / ref.name / ref.key if ref.key else secrets_dir / ref.name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            try:
                data = os.read(fd, MAX_SECRET_BYTES + 1)
            finally:
                os.close(fd)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise MissingSecret(f"{what} (for {var}) not found on this cluster") from None
        except OSError as exc:
            raise MissingSecret(f"{what} (for {var}) cannot be read: {exc.strerror}") from None
        if len(data) > MAX_SECRET_BYTES:
            raise MissingSecret(f"{what} (for {var}) is larger than {MAX_SECRET_BYTES} bytes")
        try:
            text = data.decode()
        except UnicodeDecodeError:
            raise MissingSecret(f"{what} (for {var}) is not UTF-8 text") from None
        if "\0" in text:
            raise MissingSecret(f"{what} (for {var}) contains a NUL byte")
        # A file written with `echo` ends in a newline that is not part of the secret.
        out[var] = text.removesuffix("\n")
    return out
