"""Who may use the verdict service: Host and Origin checks and an optional bearer token.

A service on 127.0.0.1 is still reachable from any web page the user opens: the browser
posts a cross-site form without asking (multipart is a "simple" request), and DNS rebinding
can make a foreign name resolve to 127.0.0.1. So:

- Host: the request's Host header must name an allowed host (default: the loopback names;
  ``*`` allows any), which defeats DNS rebinding;
- Origin: an API request that carries an Origin header (browsers always send one on a
  cross-origin POST) must come from the service's own origin or a configured one;
- token: when set, every ``/api/`` request needs ``Authorization: Bearer <token>``.

Pure logic, no web framework: ``AccessPolicy.refuse`` takes a path and lower-cased headers.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


def host_name(host_header: str) -> str:
    """The name in a Host header, without port or IPv6 brackets, lower-cased."""
    h = host_header.strip().lower()
    if h.startswith("["):
        return h[1:h.find("]")] if "]" in h else h[1:]
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


def is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class AccessPolicy:
    """Allowed Host names, extra allowed Origins (``scheme://host[:port]``), bearer token."""

    hosts: tuple[str, ...] = LOOPBACK_NAMES
    origins: tuple[str, ...] = ()
    token: str | None = None

    def refuse(self, path: str, headers: dict[str, str]
               ) -> tuple[int, str] | tuple[int, str, dict[str, str]] | None:
        """(status, detail[, headers]) to answer instead of serving, or None to serve."""
        host = headers.get("host", "")
        if "*" not in self.hosts and host_name(host) not in {h.lower() for h in self.hosts}:
            return 403, (f"host {host!r} is not allowed (start the service with --allow-host "
                         "to add a name)")
        if not path.startswith("/api/"):
            return None
        origin = headers.get("origin")
        if origin is not None and not self.origin_allowed(origin, host):
            return 403, (f"origin {origin!r} is not allowed: the API answers only its own "
                         "page and origins given with --allow-origin")
        if self.token:
            auth = headers.get("authorization", "")
            if not hmac.compare_digest(auth.encode(), f"Bearer {self.token}".encode()):
                return 401, "a valid 'Authorization: Bearer <token>' header is required", {
                    "www-authenticate": "Bearer"}
        return None

    def origin_allowed(self, origin: str, host: str) -> bool:
        o = origin.strip().rstrip("/").lower()
        if "*" in self.origins or o in {x.rstrip("/").lower() for x in self.origins}:
            return True
        parts = urlsplit(o)
        # same origin: the page this service served (the Host was checked above)
        return parts.scheme in ("http", "https") and parts.netloc == host.strip().lower()


def bind_warning(host: str, token: str | None) -> str | None:
    """A warning for a service reachable from other machines without a token."""
    if is_loopback(host) or token:
        return None
    return (f"warning: listening on {host}, reachable from other machines, without a token: "
            "anyone who can reach it can use it; set --token (or ENSEMBLE_DFD_TOKEN) or bind "
            "to 127.0.0.1")
