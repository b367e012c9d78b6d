"""The viewer's request guard: Host and Origin checks, the access token, sessions and headers.

One ASGI middleware in front of every route:

- a request whose Host header is not the bound host (or localhost / 127.0.0.1 / [::1]) with
  the bound port is refused 403: a DNS-rebinding page cannot talk to the viewer;
- a POST must come from the viewer's own pages: its Origin (or, without one, its Referer) must
  be the viewer's origin, or the browser must mark it `Sec-Fetch-Site: same-origin` (under
  `Referrer-Policy: no-referrer` browsers send `Origin: null` even on same-origin POSTs); the
  form's CSRF token (an HMAC of the session cookie) is checked by the route;
- when a token is configured (binding a non-loopback address), `?token=` is exchanged once for
  an HttpOnly SameSite=Strict cookie and every other request needs that cookie;
- every response carries a strict Content-Security-Policy (no inline or remote scripts),
  nosniff, no-referrer and no-framing headers.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
import time
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl, urlencode, urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}
TOKEN_COOKIE = "evals_view_token"
SESSION_COOKIE = "evals_view_session"
_SESSION_FORMAT = re.compile(r"^[A-Za-z0-9_-]{22,64}$")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
ALLOWED_METHODS = ("GET", "HEAD", "POST")


def is_loopback(host: str) -> bool:
    """True for localhost and loopback IP addresses (127.0.0.0/8, ::1)."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def is_wildcard(host: str) -> bool:
    """True for the all-interfaces addresses 0.0.0.0 and ::."""
    return host.strip("[]") in ("0.0.0.0", "::")


def host_name(host: str) -> str:
    """A host as it appears in a Host header (IPv6 addresses in brackets)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


@dataclass
class Guard:
    """What the middleware enforces: the names the viewer answers to, its token, its secret."""

    host: str
    port: int
    token: str | None = None
    extra_hosts: tuple[str, ...] = ()
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    def host_names(self) -> set[str]:
        names = {*LOOPBACK_NAMES, *(host_name(h).lower() for h in self.extra_hosts)}
        if not is_wildcard(self.host):
            names.add(host_name(self.host).lower())
        return names

    def allowed_hosts(self) -> set[str]:
        """Host header values accepted: each name with the bound port (bare on port 80)."""
        allowed = {f"{name}:{self.port}" for name in self.host_names()}
        if self.port == 80:
            allowed |= self.host_names()
        return allowed

    def allowed_origins(self) -> set[str]:
        return {f"http://{host}" for host in self.allowed_hosts()}

    def csrf_token(self, session: str) -> str:
        """The form token of a session: an HMAC, so it cannot be forged without the secret."""
        return hmac.new(self.secret, session.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, session: str | None, token: str | None) -> bool:
        if not session or not token:
            return False
        return hmac.compare_digest(self.csrf_token(session), token)

    def token_ok(self, candidate: str | None) -> bool:
        if self.token is None:
            return True
        return candidate is not None and hmac.compare_digest(
            candidate.encode(), self.token.encode()
        )


def _refuse(status: int, message: str) -> Response:
    return PlainTextResponse(message + "\n", status_code=status)


def _cookies(headers: Headers) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    for raw in headers.getlist("cookie"):
        try:
            jar.load(raw)
        except Exception:  # a malformed cookie header is ignored, as browsers would
            continue
    return {key: morsel.value for key, morsel in jar.items()}


def _origin_of(url: str) -> str | None:
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


def post_allowed(guard: Guard, headers: Headers) -> bool:
    """Does this POST come from the viewer's own pages (see the module docstring)?"""
    origins = guard.allowed_origins()
    origin = headers.get("origin")
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site != "same-origin":
        return False
    if origin is not None and origin != "null":
        return origin.lower() in origins
    referer = headers.get("referer")
    if referer:
        return _origin_of(referer) in origins
    return fetch_site == "same-origin"


def _cookie(name: str, value: str) -> str:
    return f"{name}={value}; Path=/; HttpOnly; SameSite=Strict"


class GuardMiddleware:
    """Apply `Guard` to every HTTP request; adds the security headers to every response."""

    def __init__(self, app: ASGIApp, guard: Guard) -> None:
        self.app = app
        self.guard = guard
        self._allowed_hosts = guard.allowed_hosts()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = Headers(scope=scope)
        cookies = _cookies(headers)
        response = self._check(scope, headers, cookies)
        session = cookies.get(SESSION_COOKIE, "")
        new_session = not _SESSION_FORMAT.match(session)
        if new_session:
            session = secrets.token_urlsafe(24)
        scope.setdefault("state", {})["session"] = session

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    out[name] = value
                if "cache-control" not in out:
                    out["cache-control"] = "no-store"
                if new_session and response is None:
                    out.append("set-cookie", _cookie(SESSION_COOKIE, session))
                elapsed = (time.perf_counter() - started) * 1e3
                out["server-timing"] = f"app;dur={elapsed:.1f}"
            await send(message)

        if response is not None:
            await response(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)

    def _check(self, scope: Scope, headers: Headers, cookies: dict[str, str]) -> Response | None:
        """None to let the request through, else the refusal (or the token redirect)."""
        host = (headers.get("host") or "").lower()
        if host not in self._allowed_hosts:
            return _refuse(403, "refused: this Host is not the viewer's address")
        if scope["method"] not in ALLOWED_METHODS:
            return _refuse(405, "method not allowed")
        if scope["method"] == "POST" and not post_allowed(self.guard, headers):
            return _refuse(403, "refused: cross-origin POST")
        if self.guard.token is None:
            return None
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), True)
        offered = [value for key, value in query if key == "token"]
        if offered and scope["method"] in ("GET", "HEAD"):
            if not self.guard.token_ok(offered[-1]):
                return _refuse(401, "the token is wrong: use the URL `evals view` printed")
            rest = urlencode([(k, v) for k, v in query if k != "token"])
            # One leading slash: "//host" would be a redirect to another site.
            path = "/" + str(scope["path"]).lstrip("/")
            redirect = RedirectResponse(path + (f"?{rest}" if rest else ""), 303)
            redirect.headers.append("set-cookie", _cookie(TOKEN_COOKIE, self.guard.token))
            return redirect
        if not self.guard.token_ok(cookies.get(TOKEN_COOKIE)):
            return _refuse(401, "this viewer needs its token: open the URL `evals view` printed")
        return None
