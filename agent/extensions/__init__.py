"""Capabilities that ride on the MQTT connection and observe the supervisor from outside."""
