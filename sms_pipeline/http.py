"""The one outbound HTTP path for URLs producers give us (callbacks, any future webhook).

An unchecked URL from outside would make us a port scanner with a way into Redis,
PostgreSQL or the cloud metadata service, so every request is checked and bounded: http(s)
only; every resolved address checked (`check_address`, by explicit lists;
`SMS_CALLBACK_ALLOW_PRIVATE` lets on-premise receivers through, never metadata addresses)
and the connection pinned to it; no proxy or `.netrc`; one total deadline a watchdog
enforces; no redirects; the body capped. docs/security.md lists each guard with its test.
Failures raise `OutboundError`, whose `reason` never holds the URL (it may carry a token).
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from sms_pipeline.settings import mask_url

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _nets(*cidrs: str) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


# Explicit lists, not the interpreter's `ipaddress` tables (which differ between Python
# versions and call 192.0.0.192 or 168.63.129.16 "global"). `is_global` stays a second net.
#
# Metadata and provider-internal services: refused always, SMS_CALLBACK_ALLOW_PRIVATE or not.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure IMDS, OpenStack, DigitalOcean, Oracle (v1)
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "169.254.170.2",  # AWS ECS task credentials
        "169.254.170.23",  # AWS EKS pod identity
        "fd00:ec2::23",  # AWS EKS pod identity over IPv6
        "192.0.0.192",  # Oracle Cloud metadata
        "168.63.129.16",  # Azure WireServer (and its DNS/health probe)
        "100.100.100.200",  # Alibaba Cloud metadata
    )
)
# Never a receiver: unspecified, "this network", broadcast, multicast, reserved,
# documentation, benchmarking, IETF protocol assignments, 6to4 relay, deprecated site-local.
NEVER_NETWORKS = _nets(
    "0.0.0.0/8",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "100::/64",
    "2001::/23",
    "2001:db8::/32",
    "3fff::/20",
    "fec0::/10",
    "ff00::/8",
)
# On-premise receivers: allowed only with SMS_CALLBACK_ALLOW_PRIVATE.
LOOPBACK_NETWORKS = _nets("127.0.0.0/8", "::1/128")
LINK_LOCAL_NETWORKS = _nets("169.254.0.0/16", "fe80::/10")
PRIVATE_NETWORKS = _nets(
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"
)
# IPv6 forms that carry an IPv4 address: refused outright (how filters get bypassed).
_MAPPED = ipaddress.ip_network("::ffff:0:0/96")
_COMPATIBLE = ipaddress.ip_network("::/96")
_NAT64 = _nets("64:ff9b::/96", "64:ff9b:1::/48")
_6TO4 = ipaddress.ip_network("2002::/16")
_TEREDO = ipaddress.ip_network("2001::/32")
MAX_URL_LENGTH = 2000


class OutboundError(Exception):
    """A refused or failed outbound request; `permanent` = retrying cannot help."""

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


class UnsafeUrlError(OutboundError):
    """The URL is not one we may call (scheme, user info, forbidden address)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, permanent=True)


class DeadlineExceededError(OutboundError):
    """The whole exchange did not finish within its deadline."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str  # path and query, as sent on the request line

    def __repr__(self) -> str:
        # The path's query may carry a receiver's token (?token=...): masked like a setting.
        return (
            f"Target(scheme={self.scheme!r}, host={self.host!r}, port={self.port}, "
            f"path={mask_url(self.path)!r})"
        )


@dataclass(frozen=True)
class Answer:
    status: int


def system_resolver(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (the stdlib resolver)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def parse_url(url: str) -> Target:
    """Scheme, host, port and path of an http(s) URL, or UnsafeUrlError saying why not."""
    if not isinstance(url, str) or len(url) > MAX_URL_LENGTH:
        raise UnsafeUrlError(f"must be an http(s) URL of at most {MAX_URL_LENGTH} characters")
    if any(ord(c) <= 32 or ord(c) == 127 for c in url):
        raise UnsafeUrlError("must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UnsafeUrlError("is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in {"http", "https"}:
        raise UnsafeUrlError("must be an http(s) URL")
    if "@" in parts.netloc:
        raise UnsafeUrlError("must not contain user info (user:password@)")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise UnsafeUrlError("must name a host")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(scheme, host, port or (443 if scheme == "https" else 80), path)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address in _MAPPED or address.ipv4_mapped is not None:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _6TO4 or address.sixtofour is not None:
        return ipaddress.IPv4Address((int(address) >> 80) & 0xFFFFFFFF)
    if address in _TEREDO or address.teredo is not None:
        return ipaddress.IPv4Address(~int(address) & 0xFFFFFFFF)
    if any(address in net for net in _NAT64):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _COMPATIBLE and int(address) > 1:  # ::a.b.c.d (deprecated IPv4-compatible)
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _among(address: Address, networks: tuple[Network, ...]) -> bool:
    return any(address.version == net.version and address in net for net in networks)


def check_address(raw: str, *, allow_private: bool = False) -> Address:
    """The address, or UnsafeUrlError when it is not one a producer may make us connect to."""
    try:
        address = ipaddress.ip_address(raw.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        raise UnsafeUrlError("resolves to something that is not an IP address") from None
    if address in METADATA_ADDRESSES:
        raise UnsafeUrlError("points at a cloud metadata or provider-internal address")
    if isinstance(address, ipaddress.IPv6Address):
        inner = _embedded_ipv4(address)
        if inner is not None:
            # Mapped/tunnelled forms are how filters get bypassed: refuse them outright.
            raise UnsafeUrlError("points at an IPv4-mapped or tunnelled address")
    if _among(address, NEVER_NETWORKS) or address.is_unspecified or address.is_multicast:
        raise UnsafeUrlError("points at an unspecified, multicast or reserved address")
    for networks, what in (
        (LOOPBACK_NETWORKS, "a loopback"),
        (LINK_LOCAL_NETWORKS, "a link-local"),
        (PRIVATE_NETWORKS, "a private"),
    ):
        if _among(address, networks):
            if allow_private:
                return address
            raise UnsafeUrlError(f"points at {what} address")
    if address.is_loopback or address.is_link_local or address.is_private:
        raise UnsafeUrlError("points at a private address")  # the interpreter's tables too
    if address.is_reserved or not address.is_global:
        raise UnsafeUrlError("points at a reserved address")
    return address


def resolve_checked(
    target: Target, *, allow_private: bool, resolver: Resolver | None = None
) -> Address:
    """The address to connect to: the host's, when every one it resolves to is allowed."""
    try:
        literal = ipaddress.ip_address(target.host.strip("[]"))
    except ValueError:
        literal = None
    if literal is not None:
        return check_address(str(literal), allow_private=allow_private)
    try:
        found = (resolver or system_resolver)(target.host, target.port)
    except (OSError, UnicodeError):
        raise OutboundError("the host does not resolve") from None
    if not found:
        raise OutboundError("the host does not resolve")
    # All of them, not the first: a name that also resolves to 127.0.0.1 is refused.
    checked = [check_address(a, allow_private=allow_private) for a in found]
    return checked[0]


def check_url(url: str, *, allow_private: bool, resolver: Resolver | None = None) -> Target:
    """Refuse `url` (UnsafeUrlError) unless http(s) with a host resolving to allowed addresses.

    Used where a URL is accepted (enqueue, the API); delivery checks again, then pins.
    A host that does not resolve (OutboundError, not UnsafeUrlError) is left to delivery.
    """
    target = parse_url(url)
    resolve_checked(target, allow_private=allow_private, resolver=resolver)
    return target


class _Watchdog:
    """Shuts the socket down at the deadline: a blocked read then returns at once."""

    def __init__(self, seconds: float) -> None:
        self.fired = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(0.0, seconds), self._fire)
        self._timer.daemon = True

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sock = sock
            if self.fired:
                self._shutdown()

    def _shutdown(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):  # already closed
                # socket.socket's own shutdown, also on an SSLSocket: the OS call on its
                # descriptor, leaving the TLS object to the thread blocked in it.
                socket.socket.shutdown(self._sock, socket.SHUT_RDWR)

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            self._shutdown()

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._timer.cancel()


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(
        self, target: Target, address: Address, timeout: float, watchdog: _Watchdog
    ) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self._address = address
        self._watchdog = watchdog

    def _open(self) -> socket.socket:
        sock = socket.create_connection((str(self._address), self.port), self.timeout)
        self._watchdog.watch(sock)
        return sock

    def connect(self) -> None:
        self.sock = self._open()


class _PinnedHTTPSConnection(_PinnedHTTPConnection):
    def __init__(
        self, target: Target, address: Address, timeout: float, watchdog: _Watchdog
    ) -> None:
        super().__init__(target, address, timeout, watchdog)
        self._context = ssl.create_default_context()

    def connect(self) -> None:
        # SNI and the certificate check use the URL's host, not the pinned address.
        # wrap_socket detaches the raw socket (its descriptor moves to the TLS socket): the
        # watchdog must watch the TLS socket, and before the handshake, which a server can
        # drip too.
        tls = self._context.wrap_socket(
            self._open(), server_hostname=self.host, do_handshake_on_connect=False
        )
        self._watchdog.watch(tls)
        tls.do_handshake()
        self.sock = tls


def post(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    deadline_seconds: float,
    allow_private: bool = False,
    resolver: Resolver | None = None,
    max_body_bytes: int = 65536,
) -> Answer:
    """POST `body` to `url` through every guard above; the status, or OutboundError."""
    started = time.monotonic()
    target = parse_url(url)
    address = resolve_checked(target, allow_private=allow_private, resolver=resolver)
    remaining = deadline_seconds - (time.monotonic() - started)
    if remaining <= 0:
        raise DeadlineExceededError(f"deadline of {deadline_seconds:g} s passed")
    connection_class = _PinnedHTTPSConnection if target.scheme == "https" else _PinnedHTTPConnection
    with _Watchdog(remaining) as watchdog:
        connection = connection_class(target, address, remaining, watchdog)
        try:
            connection.request("POST", target.path, body=body, headers=dict(headers))
            response = connection.getresponse()
            left = max_body_bytes
            while left > 0:  # drain a little so the server is not cut off mid-write
                chunk = response.read(min(left, 8192))
                if not chunk:
                    break
                left -= len(chunk)
            status = response.status
        except (OSError, http.client.HTTPException) as exc:
            if watchdog.fired:
                raise DeadlineExceededError(f"deadline of {deadline_seconds:g} s passed") from None
            if isinstance(exc, TimeoutError | socket.timeout):
                raise DeadlineExceededError(f"deadline of {deadline_seconds:g} s passed") from None
            # The class only: the text may quote the host or the URL.
            raise OutboundError(type(exc).__name__) from None
        finally:
            connection.close()
        if watchdog.fired:
            raise DeadlineExceededError(f"deadline of {deadline_seconds:g} s passed")
    return Answer(status)
