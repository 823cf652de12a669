"""What a response over HTTPS carries besides its content: HSTS, and only Secure cookies.

The server speaks TLS itself (uvicorn's --ssl-* options, see mlflow_stack/render.py), so a
request that reached the app over TLS has the https scheme; plain HTTP on that port never gets
this far (the TLS handshake fails). Cookies set by MLflow or Flask without the Secure attribute
get it here, so that a browser never sends them over plain HTTP.

As ASGI middleware around the app uvicorn serves, so that MLflow's FastAPI routes (/health,
the gateway, …) are covered as well as the Flask ones; a plain Flask app gets the same through
an after_request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from flask import Flask, Response, request

HSTS = "max-age=31536000"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _attributes(cookie: str) -> set[str]:
    return {part.strip().split("=", 1)[0].lower() for part in cookie.split(";")[1:]}


def secured_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Response headers with HSTS added and every cookie marked Secure."""
    result = []
    has_hsts = False
    for name, value in headers:
        lower = name.lower()
        if lower == b"strict-transport-security":
            has_hsts = True
        elif lower == b"set-cookie" and "secure" not in _attributes(value.decode("latin-1")):
            value += b"; Secure"
        result.append((name, value))
    if not has_hsts:
        result.append((b"strict-transport-security", HSTS.encode()))
    return result


class SecureTransport:
    """ASGI middleware: HSTS and Secure cookies on every answer given over HTTPS."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http" or scope.get("scheme") != "https":
            await self.app(scope, receive, send)
            return

        async def send_secured(message: Message) -> None:
            if message.get("type") == "http.response.start":
                message["headers"] = secured_headers(list(message.get("headers") or []))
            await send(message)

        await self.app(scope, receive, send_secured)


def secure_response(response: Response) -> Response:
    """The same for a Flask app served without the ASGI middleware."""
    if not request.is_secure:
        return response
    response.headers.setdefault("Strict-Transport-Security", HSTS)
    cookies = response.headers.getlist("Set-Cookie")
    if any("secure" not in _attributes(cookie) for cookie in cookies):
        response.headers.remove("Set-Cookie")
        for cookie in cookies:
            secure = cookie if "secure" in _attributes(cookie) else f"{cookie}; Secure"
            response.headers.add("Set-Cookie", secure)
    return response


def install(app: Any) -> Any:
    """Around the app MLflow's create_app returned: the middleware where it is the FastAPI
    app (uvicorn), the after_request where it is a Flask app."""
    if hasattr(app, "add_middleware"):
        app.add_middleware(SecureTransport)
    elif isinstance(app, Flask):
        app.after_request(secure_response)
    return app
