"""The server's guards: an access token, the Host header check, and the upload limits.

* **Loopback by default.** ``xaikit serve`` binds ``127.0.0.1``. Any other ``--host`` makes
  an access token mandatory: :func:`new_token` (``secrets``) is printed once at start and
  every request must carry it, as the ``X-Xaikit-Token`` header or ``?token=``; it is
  compared with :func:`hmac.compare_digest` (no timing leak). Missing: 401; wrong: 403.
* **DNS rebinding.** A web page on another site can point its own host name at 127.0.0.1
  and make the browser talk to this server; the browser then sends *that* name as ``Host``.
  Only the bound host, the loopback names and explicitly allowed names, with the bound port,
  are accepted (:func:`host_allowed`); anything else is refused with 400.
* **Other sites' pages** (CSRF): a request whose ``Origin`` is not this server is refused
  with 403 (:func:`origin_allowed`), and JSON endpoints take ``application/json`` only, a
  content type no cross-site form can send without the browser asking first.
* **Uploads** are bounded in bytes here (:data:`MAX_UPLOAD_BYTES`) and in pixels by the
  image loader (:data:`xaikit.data.images.MAX_PIXELS`, checked before decoding).
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from collections.abc import Iterable

TOKEN_HEADER = "x-xaikit-token"
TOKEN_PARAM = "token"
#: The largest upload accepted, in bytes (a 64x64 PNG is a few kB; a phone photo ~10 MB).
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def new_token() -> str:
    """A fresh random access token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def is_loopback(host: str) -> bool:
    """``host`` names this machine only (``127.0.0.1``, ``::1``, ``localhost``)."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token_required(host: str) -> bool:
    """A token is needed whenever the server listens beyond the loopback interface."""
    return not is_loopback(host)


def check_token(given: str | None, expected: str | None) -> int | None:
    """``None`` when the request may pass, else the HTTP status to refuse it with (401 no
    token, 403 a wrong one). ``expected`` ``None`` means no token is required."""
    if expected is None:
        return None
    if not given:
        return 401
    if not hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8")):
        return 403
    return None


def allowed_hosts(host: str, port: int, extra: Iterable[str] = ()) -> frozenset[str]:
    """The ``Host`` header values accepted: ``name:port`` for the bound host, the loopback
    names and ``extra`` names (and the bare name where the port is the scheme's default)."""
    names = {name.lower() for name in (*LOOPBACK_NAMES, *extra)}
    if host not in ("0.0.0.0", "::", ""):
        names.add(host.lower())
    accepted = set()
    for name in names:
        shown = f"[{name.strip('[]')}]" if ":" in name.strip("[]") else name
        accepted.add(f"{shown}:{port}")
        if port in (80, 443):
            accepted.add(shown)
    return frozenset(accepted)


def origin_allowed(origin: str | None, accepted: frozenset[str]) -> bool:
    """A request's ``Origin`` (sent by browsers on cross-site and on ``fetch`` POSTs) is
    absent or names this server: another site's page cannot start work here (CSRF)."""
    if origin is None:
        return True
    from urllib.parse import urlsplit

    parts = urlsplit(origin.strip())
    return parts.scheme in ("http", "https") and parts.netloc.lower() in accepted


def host_allowed(header: str | None, accepted: frozenset[str]) -> bool:
    """The request's ``Host`` header is one of ``accepted`` (case-insensitive)."""
    return bool(header) and header.strip().lower() in accepted
