"""Casting: find a Google Cast device, make it play our stream, and report what it really does."""

from agent.cast.deferred import deferred

# pychromecast.config imports requests, with urllib3, idna and charset_normalizer, for two
# lookups of app configurations on Google's servers that the agent never makes (the import
# row of bench/footprint.py: 70 -> 65 MB without them). Its first use would still import it.
with deferred("requests"):
    import pychromecast  # noqa: F401
