"""The hub's REST API (FastAPI). ``create_app(hub)`` builds it; nothing happens at import."""
