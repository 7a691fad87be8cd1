"""Request body limits, enforced before a byte is parsed, declared in the OpenAPI document.

A route says which limit it takes with ``openapi_extra=body_limit("bulk")``
(default: ``default``; ``rucio`` is the hermes parser's own bound, not a setting);
``table`` turns the names into the configured byte counts when the app is made
and ``document`` writes them into each operation of the OpenAPI document as
``x-max-body-bytes``. ``BodyLimit`` (pure ASGI) refuses a declared
``Content-Length`` over the limit at once and counts streamed bodies, so a
chunked upload cannot slip past it either: 413 in the envelope.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dawms.ddm_bridge.rucio.messages import MAX_BODY_BYTES as RUCIO_BODY_BYTES

from .envelope import error_body
from .routes import RouteInfo, api_routes
from .settings import ServerSettings

KIND_KEY = "x-dawms-body-limit"
BYTES_KEY = "x-max-body-bytes"


def body_limit(kind: str) -> dict[str, Any]:
    """``openapi_extra`` for a route taking the ``kind`` limit (default, bulk, ddm, rucio)."""
    return {KIND_KEY: kind}


def limits_of(settings: ServerSettings) -> dict[str, int]:
    """Bytes per limit name. ``rucio`` is not a setting: it is the bound the hermes
    message parser itself enforces, so the two can never disagree."""
    return {"default": settings.max_body_bytes, "bulk": settings.max_bulk_body_bytes,
            "ddm": settings.max_ddm_body_bytes, "rucio": RUCIO_BODY_BYTES}


def table(app: FastAPI, settings: ServerSettings) -> list[tuple[RouteInfo, int]]:
    """Each route with its body limit in bytes."""
    sizes = limits_of(settings)
    return [(r, sizes[r.openapi_extra.get(KIND_KEY, "default")]) for r in api_routes(app)]


def document(schema: dict[str, Any], settings: ServerSettings) -> dict[str, Any]:
    """Replace each operation's limit name by its bytes (``x-max-body-bytes``)."""
    sizes = limits_of(settings)
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            if isinstance(operation, dict) and "responses" in operation:
                operation[BYTES_KEY] = sizes[operation.pop(KIND_KEY, "default")]
    return schema


class TooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than {limit} bytes, the limit here")


class BodyLimit:
    def __init__(self, app: ASGIApp, fastapi_app: FastAPI, settings: ServerSettings) -> None:
        self.app = app
        self.fastapi_app = fastapi_app
        self.default = settings.max_body_bytes
        self.settings = settings
        self._table: list[tuple[RouteInfo, int]] | None = None

    def _limit(self, scope: Scope) -> int:
        if self._table is None:  # on the first request: every route is included by then
            self._table = table(self.fastapi_app, self.settings)
        path = scope["path"]
        for route, n in self._table:
            if route.path_regex.match(path) and scope["method"] in route.methods:
                return n
        return self.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > limit
            except ValueError:
                too_big = False  # the server's own parser refuses a malformed length
            if too_big:
                await _refuse(send, limit)
                return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise TooLarge(limit)  # FastAPI re-raises HTTPException from body reads
            return message

        await self.app(scope, counted, send)


async def _refuse(send: Send, limit: int) -> None:
    body = json.dumps(error_body(
        413, f"request body is larger than {limit} bytes, the limit here")).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
