"""The CLI's two consoles. Messages are never wrapped by the console (a reason split
mid-sentence cannot be read back or grepped); the terminal wraps them if it must. Tables
still fit the terminal's width."""

from __future__ import annotations

from rich.console import Console

console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
