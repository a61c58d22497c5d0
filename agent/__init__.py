"""pagecast: put a live web page on a Google Cast screen when an MQTT message asks for it."""

__version__ = "0.1.0"
