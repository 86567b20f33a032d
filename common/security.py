"""CurveZMQ on every cluster socket, and an authenticator that admits only the cluster's key.

Cluster messages can carry pickled functions, so whoever can get a message processed can run
code. Every member (services and drivers) holds the cluster's key pair (`squall keys` makes one;
a local cluster makes its own): servers (ROUTER sockets) speak CURVE as the key pair's server,
and clients (DEALER sockets) prove they hold the same key pair, which a ZAP handler in each
service checks (without one, libzmq would admit any client that knows the server's public key).
A peer without the secret key cannot finish the handshake, so none of its messages reach a
handler. Plaintext is refused unless `plaintext` is set, and then only on loopback addresses.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any
from urllib.parse import urlsplit

import zmq
from squall.common.settings import Settings
from zmq.auth.thread import ThreadAuthenticator

Z85_KEY_LENGTH = 40


class SecurityError(ValueError):
    """Keys missing or malformed, or plaintext asked for where it is not allowed."""


def new_keypair() -> tuple[str, str]:
    """A fresh cluster key pair (public, secret), as z85 text without "$": docker-compose (and
    the dotenv files it reads) expand "$" even in quoted values, which would corrupt a key. About
    one pair in 2.6 is kept; what is lost is a sliver of a 256-bit key space."""
    while True:
        public, secret = (k.decode("ascii") for k in zmq.curve_keypair())
        if "$" not in public and "$" not in secret:
            return public, secret


def check(settings: Settings, endpoints: list[str]) -> None:
    """Refuse to run without keys (unless plaintext is set and every endpoint is loopback)."""
    if settings.plaintext:
        outside = [e for e in endpoints if e and not is_loopback(e)]
        if outside:
            raise SecurityError(
                f"plaintext (SQUALL_PLAINTEXT) is allowed only on loopback, but {', '.join(outside)} is not: "
                "set SQUALL_CURVE_PUBLIC_KEY and SQUALL_CURVE_SECRET_KEY (from `squall keys`) instead"
            )
        return
    for name in ("curve_public_key", "curve_secret_key"):
        value = getattr(settings, name)
        if not value:
            raise SecurityError(
                f"no CurveZMQ key: set SQUALL_{name.upper()} (make a pair with `squall keys`), "
                "or SQUALL_PLAINTEXT=true for a cluster on loopback only"
            )
        if len(value) != Z85_KEY_LENGTH:
            raise SecurityError(f"SQUALL_{name.upper()} must be a {Z85_KEY_LENGTH}-character z85 key, got {len(value)} characters")
    try:
        derived = zmq.curve_public(settings.curve_secret_key.encode("ascii")).decode("ascii")
    except (zmq.ZMQError, ValueError, UnicodeEncodeError) as exc:
        raise SecurityError(f"SQUALL_CURVE_SECRET_KEY is not a z85 key: {exc}") from None
    if derived != settings.curve_public_key:
        raise SecurityError("SQUALL_CURVE_PUBLIC_KEY does not belong to SQUALL_CURVE_SECRET_KEY (use one pair from `squall keys`)")


def is_loopback(endpoint: str) -> bool:
    """tcp://127.0.0.1:7077, tcp://[::1]:1, tcp://localhost:2, ipc:// and inproc:// are local."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    host = urlsplit(endpoint).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def configure(sock: zmq.SyncSocket, settings: Settings, server: bool) -> None:
    """Make a socket speak CURVE with the cluster's keys (nothing in plaintext mode)."""
    if settings.plaintext or not settings.curve_secret_key:
        return
    public = settings.curve_public_key.encode("ascii")
    sock.curve_secretkey = settings.curve_secret_key.encode("ascii")
    sock.curve_publickey = public
    if server:
        sock.curve_server = True
    else:
        sock.curve_serverkey = public


class RefusalCount:
    """Connections the ZAP handler refused, over the process's life (squall_auth_refused_total).
    Counted on the authenticator's thread, read by the metrics endpoint's."""

    def __init__(self) -> None:
        self.count = 0


AUTH_REFUSALS = RefusalCount()


class _ClusterKeyOnly:
    def __init__(self, public_key: str) -> None:
        self.public_key = public_key.encode("ascii")

    def callback(self, domain: str, key: bytes) -> bool:
        admitted = key == self.public_key
        if not admitted:
            AUTH_REFUSALS.count += 1
        return admitted


def start_authenticator(ctx: zmq.SyncContext, settings: Settings, log: Any = None) -> ThreadAuthenticator | None:
    """A ZAP handler for the context's server sockets admitting only the cluster's public key."""
    if settings.plaintext:
        return None
    auth = ThreadAuthenticator(ctx, log=logging.getLogger("squall.zap"))
    auth.start()
    auth.configure_curve_callback(domain="*", credentials_provider=_ClusterKeyOnly(settings.curve_public_key))
    return auth
