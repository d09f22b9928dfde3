"""Where the hub is: the default address, and ``--hub`` / ``ORRERY_HUB`` as users type it.

Light on purpose (no HTTP library): the CLI reads ``DEFAULT_HUB`` at start-up.
"""

from __future__ import annotations

from orrery.errors import InvalidInput

DEFAULT_HUB = "http://127.0.0.1:8080"


def hub_url(url: str) -> str:
    """A hub URL as a user types it: ``127.0.0.1:8080`` means ``http://127.0.0.1:8080``."""
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    scheme = url.split("://", 1)[0].lower()
    if scheme not in ("http", "https") or not url.split("://", 1)[1]:
        raise InvalidInput(
            f"--hub: {url!r} is not a hub URL: expected http://HOST:PORT or https://HOST"
        )
    return url


def hub_urls(urls: str) -> list[str]:
    """``--hub`` / ``ORRERY_HUB``: one hub URL, or several separated by commas (a leader
    and its standbys; the client follows to whichever leads)."""
    out = [hub_url(u) for u in urls.split(",") if u.strip()]
    if not out:
        raise InvalidInput("--hub: no hub URL given")
    return out
