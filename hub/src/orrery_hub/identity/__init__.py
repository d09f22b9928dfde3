"""Cluster identity: the hub's CA, join tokens, enrollment, and the nats-server
configuration that gives each enrolled cluster exactly its own subjects."""
