"""Commands: validate what a transport received and turn it into supervisor calls.

Transport-agnostic on purpose: MQTT and the HTTP webhook share one Dispatcher, so both
answer with the same Response objects and drive the supervisor through one code path.
"""

from agent.commands.dispatcher import COMMANDS, Dispatcher
from agent.commands.models import ErrorBody, Response

__all__ = ["COMMANDS", "Dispatcher", "ErrorBody", "Response"]
