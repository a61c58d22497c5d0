"""Casting: find a Google Cast device, make it play our stream, and report what it really does."""
