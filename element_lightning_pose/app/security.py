"""Who may ask the app for what: the token, the host, state changes, upload sizes, headers.

- **Token.** When the app has a token (always, off loopback), every request carries it: the
  ``Authorization: Bearer`` header, or the ``elp_token`` cookie that a first visit to
  ``/?token=T`` sets (HttpOnly, SameSite=Strict) before redirecting to the same page without
  it. Compared in constant time.
- **Host.** On loopback only the loopback names are accepted in the ``Host`` header, so a web
  page elsewhere cannot reach the app through a DNS name that points at 127.0.0.1.
- **State changes** (anything but GET/HEAD) carry the header ``X-ELP-Request: 1``, which the
  app's own pages send and which a page of another site cannot send without the app's consent
  (the app answers no CORS preflight).
- **Uploads**: a request body larger than the limit is refused (413) from its declared length,
  and a body that does not declare its length (chunked) is refused (411).
- **Headers**: a content security policy that allows only the app's own scripts and styles.
"""

from __future__ import annotations

import secrets
from urllib.parse import parse_qsl, urlencode

from starlette.datastructures import Headers
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from element_lightning_pose.app.settings import AppSettings, is_loopback

TOKEN_COOKIE = "elp_token"
REQUEST_HEADER = "x-elp-request"
SAFE_METHODS = ("GET", "HEAD")
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
        b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    ),
]


class Guard:
    """ASGI middleware applying the rules above to every HTTP request."""

    def __init__(self, app: ASGIApp, settings: AppSettings) -> None:
        self.app = app
        self.settings = settings
        self.hosts = {"127.0.0.1", "localhost", "[::1]", "::1"} | {settings.host}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, self._with_headers(send))

    def _refusal(self, scope: Scope, headers: Headers):
        if is_loopback(self.settings.host):
            host = _host_name(headers.get("host", ""))
            if host not in self.hosts:
                return PlainTextResponse(f"host {host!r} is not this app's address", status_code=421)
        if self.settings.token is not None:
            given = _given_token(scope, headers)
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
            if given is None and "token" in query and scope["method"] in SAFE_METHODS:
                if secrets.compare_digest(query["token"], self.settings.token):
                    rest = urlencode({k: v for k, v in query.items() if k != "token"})
                    response = RedirectResponse(scope["path"] + (f"?{rest}" if rest else ""), status_code=303)
                    response.set_cookie(TOKEN_COOKIE, self.settings.token, httponly=True, samesite="strict")
                    return response
            if given is None or not secrets.compare_digest(given, self.settings.token):
                return JSONResponse({"error": "this app needs its token (printed when it started)"}, status_code=401)
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.settings.max_upload_bytes):
            return _too_large(self.settings)
        if length is None and "chunked" in headers.get("transfer-encoding", "").lower():
            # a body of unknown size could exceed the limit before anyone sees it: say its length
            return JSONResponse({"error": "send a Content-Length with the request body"}, status_code=411)
        if scope["method"] not in SAFE_METHODS and headers.get(REQUEST_HEADER) != "1":
            return JSONResponse({"error": f"a change needs the header {REQUEST_HEADER}: 1"}, status_code=403)
        return None

    def _with_headers(self, send: Send) -> Send:
        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        return sending


def _host_name(value: str) -> str:
    """The host of a ``Host`` header without its port (``[::1]:8765`` -> ``[::1]``)."""
    if value.startswith("["):
        return value[: value.find("]") + 1]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def _given_token(scope: Scope, headers: Headers) -> str | None:
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    for part in headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == TOKEN_COOKIE:
            return value
    return None


def _too_large(settings: AppSettings) -> JSONResponse:
    return JSONResponse(
        {
            "error": f"the request is larger than the app's limit ({settings.max_upload_bytes // 2**20} MB, --max-upload-mb)"
        },
        status_code=413,
    )
