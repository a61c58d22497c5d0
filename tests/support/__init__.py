"""Test helpers shared by several test modules (import as ``support.<module>``)."""
