"""The web console: static assets served at ``/``, and the read-only routes only it needs.

The page is plain HTML, CSS and one vanilla JavaScript module shipped inside this package
(no CDN, no build step, works air-gapped). It calls the same REST API as the CLI, with the
same Bearer token, so roles and team scoping apply unchanged.
"""

from orrery_hub.console.routes import console_routes

__all__ = ["console_routes"]
