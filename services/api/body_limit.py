"""Refuse request bodies over the limit with 413, before anything parses them."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.api.errors import error_response
from trainforge.errors import PayloadTooLarge


class BodyLimitMiddleware:
    """Checks Content-Length up front, and counts streamed (chunked) bodies as they arrive."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _message(self) -> str:
        return (f"request bodies are limited to {self.max_bytes} bytes; a job spec is a few KiB "
                "(datasets are referenced by URI, never uploaded)")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    too_large = int(value) > self.max_bytes
                except ValueError:
                    too_large = False
                if too_large:
                    response = error_response(PayloadTooLarge(self._message()), scope["path"])
                    await response(scope, receive, send)
                    return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # FastAPI re-raises HTTPExceptions from body reading; the app's handler
                    # turns this one into problem+json.
                    raise HTTPException(413, self._message())
            return message

        await self.app(scope, limited_receive, send)
