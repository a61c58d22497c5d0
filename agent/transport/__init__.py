"""Transports: how commands reach the agent and how it reports back (MQTT; HTTP elsewhere)."""
