"""The single-slot stream supervisor: one stream at a time, the latest command wins."""
