"""The HTTP webhook: ``POST /start``, ``/stop``, ``/scene``, ``/volume``, ``/reload``, ``/next``,
``GET /status``, ``GET /health``.

For senders of the older webhook style (Home Assistant ``rest_command``, curl, scripts). Every
request goes through the same ``Dispatcher.handle`` as an MQTT command and answers with the
same response object, so both transports drive the one supervisor through one code path.
Off unless ``api.enabled``; every route needs ``Authorization: Bearer <api.token>`` unless
``api.allow_unauthenticated``. (The open liveness probe is ``/healthz``.)
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable

from aiohttp import web
from loguru import logger

from agent import __version__
from agent.commands import Dispatcher, Response
from agent.config import ApiSettings
from agent.errors import ErrorCode, ErrorInfo
from agent.redact import redact_url
from agent.supervisor.supervisor import Supervisor

Handler = Callable[[web.Request], Awaitable[web.Response]]

# A refused command is the sender's mistake; only an unexpected failure is the agent's.
_SERVER_ERRORS = frozenset({ErrorCode.INTERNAL})


def http_status(response: Response) -> int:
    if response.ok:
        return 200
    if response.error is not None and response.error.code is ErrorCode.UNAUTHORIZED:
        return 401
    if response.error is not None and response.error.code in _SERVER_ERRORS:
        return 500
    return 400


def _json(payload: object) -> str:
    # The status in an answer names the URL on screen: never with its password.
    return redact_url(json.dumps(payload))


def _reply(response: Response) -> web.Response:
    reply = web.json_response(response.to_payload(), status=http_status(response), dumps=_json)
    if reply.status == 401:
        reply.headers["WWW-Authenticate"] = 'Bearer realm="pagecast"'
    return reply


class WebhookApi:
    def __init__(
        self, settings: ApiSettings, dispatcher: Dispatcher, supervisor: Supervisor
    ) -> None:
        token = settings.token.get_secret_value() if settings.token else ""
        # An empty token must not match an empty "Bearer " header.
        self._token = token.encode() if token else None
        self._open = settings.allow_unauthenticated
        self._dispatcher = dispatcher
        self._supervisor = supervisor

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/start", self._guarded("start", self._command("start"))),
            web.post("/stop", self._guarded("stop", self._command("stop"))),
            *(
                web.post(f"/{name}", self._guarded(name, self._command(name)))
                for name in ("scene", "volume", "reload", "next")
            ),
            web.get("/status", self._guarded("status", self._command("status"))),
            web.get("/health", self._guarded("health", self._health)),
        ]

    def _authorized(self, request: web.Request) -> bool:
        if self._open:
            return True
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        if self._token is None or scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(credentials.strip().encode(), self._token)

    def _guarded(self, command: str, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.Response:
            if not self._authorized(request):
                logger.warning("webhook: refused {} from {}: bad token", command, request.remote)
                info = ErrorInfo(ErrorCode.UNAUTHORIZED, "missing or wrong bearer token")
                return _reply(Response.failure(command, None, info))
            return await handler(request)

        return guarded

    def _command(self, command: str) -> Handler:
        async def handle(request: web.Request) -> web.Response:
            body = await request.read() if request.can_read_body else b""
            response = await self._dispatcher.handle(command, body, source=f"http:{request.remote}")
            return _reply(response)

        return handle

    async def _health(self, _request: web.Request) -> web.Response:
        status = self._supervisor.status
        return web.json_response({"ok": True, "version": __version__, "state": status.state.value})
