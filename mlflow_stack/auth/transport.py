"""What a response over HTTPS carries besides its content: HSTS, and only Secure cookies.

The server speaks TLS itself (uvicorn's --ssl-* options, see mlflow_stack/render.py), so a
request that reached Flask over TLS has the https scheme; plain HTTP on that port never gets
this far (the TLS handshake fails). Cookies set by MLflow or Flask without the Secure attribute
get it here, so that a browser never sends them over plain HTTP.
"""

from __future__ import annotations

from flask import Flask, Response, request

HSTS = "max-age=31536000"


def secure_response(response: Response) -> Response:
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


def _attributes(cookie: str) -> set[str]:
    return {part.strip().split("=", 1)[0].lower() for part in cookie.split(";")[1:]}


def install(app: Flask) -> None:
    app.after_request(secure_response)
