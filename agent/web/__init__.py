"""The agent's HTTP server: live streams, snapshots, health (and routes other parts add)."""
