"""The CLI's two consoles. Messages to stderr are never wrapped by the console (a reason
split mid-sentence cannot be read back or grepped); the terminal wraps them if it must."""

from __future__ import annotations

from rich.console import Console

console = Console()
err = Console(stderr=True, soft_wrap=True)
