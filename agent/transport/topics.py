"""The topic contract: every topic name the agent uses, derived from the config in one place."""

from __future__ import annotations

from dataclasses import dataclass

from agent.config import Settings


@dataclass(frozen=True, slots=True)
class Topics:
    base: str
    root: str  # "~" of the contract: <base>/<node_id>
    groups: tuple[str, ...] = ()

    @classmethod
    def of(cls, settings: Settings) -> Topics:
        return cls(settings.mqtt.base_topic, settings.topic_root, tuple(settings.groups))

    def __getitem__(self, relative: str) -> str:
        """``topics["status"]`` is ``~/status``."""
        return f"{self.root}/{relative}"

    @property
    def status(self) -> str:
        return self["status"]

    @property
    def heartbeat(self) -> str:
        return self["heartbeat"]

    @property
    def info(self) -> str:
        return self["info"]

    @property
    def event(self) -> str:
        return self["event"]

    @property
    def availability(self) -> str:
        return self["availability"]

    def command(self, name: str) -> str:
        return self[f"cmd/{name}"]

    def response(self, name: str) -> str:
        return self[f"response/{name}"]

    def command_prefixes(self) -> tuple[str, ...]:
        """Where commands for this agent arrive: its own, the whole fleet's, its groups'."""
        return (
            f"{self.root}/cmd/",
            f"{self.base}/all/cmd/",
            *(f"{self.base}/group/{group}/cmd/" for group in self.groups),
        )

    def command_filters(self) -> tuple[str, ...]:
        return tuple(f"{prefix}+" for prefix in self.command_prefixes())

    def command_of(self, topic: str) -> str | None:
        """The command a message on ``topic`` asks for, None if it is not a command topic."""
        for prefix in self.command_prefixes():
            if topic.startswith(prefix):
                name = topic[len(prefix) :]
                return name if name and "/" not in name else None
        return None
