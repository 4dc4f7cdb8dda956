"""The gateway's HTTP transport (long: every guard of one libcurl multi loop in one place).

libcurl's multi interface, driven by a thread of its own.

A :class:`CurlPool` is one keep-alive connection pool (at most `max_connections`
connections) and the thread that runs its transfers. :meth:`CurlPool.submit` hands it
POSTs and returns at once with one future per request, each settled on its own as its
transfer ends (a slow request delays no other's answer); :meth:`CurlPool.exchange` is
submit and wait for all. Per request the future holds a :class:`Reply` (status, header
lines, body) or the :class:`GatewayError` its failure means. libcurl does the HTTP in C,
for the CPU time a request costs (docs/performance.md).

Guards, set once per connection handle:

- http and https only, certificates checked against the CAs Python's ssl trusts, no
  redirects followed, no proxy (not even from the environment),
  no `.netrc`, no cookies, no decompression (so no gzip bomb), HTTP/1.1;
- one attempt is at most one request the gateway sees: the body goes through a read
  callback that cannot rewind, so libcurl cannot re-send a POST on a fresh connection
  after a reused one died (it fails instead: a failed attempt, retried by our own rule);
- a TOTAL deadline per request (`TIMEOUT_MS`: connect, request, headers and body; a
  server that drips its answer a byte at a time is cut off at it), a connect timeout,
  and a read timeout: no byte of the answer for that long once the request went out
  (checked by the pool's thread, :meth:`CurlPool._expire_reads`; libcurl's low-speed limit
  counts the request's own bytes and whole seconds only);
- the answer's body is capped at `max_bytes`, announced (Content-Length) or not.

Every transport failure is sorted into a GatewayError in :func:`_transfer_error` and
nowhere else; the reason names the kind of failure and libcurl's error number, never its
message (it may quote the URL).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import io
import os
import queue
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import pycurl

from sms_pipeline.gateway.errors import (
    GatewayConnectionError,
    GatewayError,
    GatewayProtocolError,
    GatewayTimeout,
)

Future = concurrent.futures.Future  # of a Reply: settled by the pool's thread

_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE
_EVENTS: Final = {
    pycurl.POLL_IN: _READ,
    pycurl.POLL_OUT: _WRITE,
    pycurl.POLL_INOUT: _READ | _WRITE,
}
# libcurl error numbers (curl/curl.h), by what they mean for a retry.
_CONNECT_FAILURES: Final = frozenset({5, 6, 7, 35, 51, 53, 54, 58, 59, 60, 77, 83, 90, 91})
_CUT_OFF: Final = frozenset({18, 92})
_CONNECTION_LOST: Final = {
    52: "connection closed without an answer",
    55: "connection lost while sending",
    56: "connection reset while receiving",
}
_UNREADABLE: Final = frozenset({8, 61, 100})
# The connection died after the request went out and libcurl wanted to send it again on a
# fresh one; the body cannot be rewound (by design, above), so it was not re-sent.
_NOT_RESENT: Final = 65  # CURLE_SEND_FAIL_REWIND
_TIMED_OUT: Final = 28
_TOO_LARGE: Final = 63  # CURLE_FILESIZE_EXCEEDED
_WRITE_ABORTED: Final = 23  # our write callback refused more bytes
_MAX_IDLE_HANDLES: Final = 4096
_STOPPED: Final = "request failed (transport stopped)"


@dataclass(frozen=True, slots=True)
class Reply:
    """What the gateway answered: HTTP status, raw header lines, body; or `error`."""

    status: int
    header_lines: tuple[bytes, ...]
    body: bytes
    seconds: float
    error: GatewayError | None = None

    def header(self, name: str) -> str | None:
        """The last value of header `name` (case-insensitive), or None."""
        wanted = name.lower().encode("ascii") + b":"
        for line in reversed(self.header_lines):
            if line[: len(wanted)].lower() == wanted:
                return line[len(wanted) :].strip().decode("latin-1")
        return None


_Work = tuple[list["Future[Reply]"], str, Sequence[bytes]]  # futures, url, payloads


def _transfer_error(
    errno: int, *, too_large: bool, connected: bool, seconds: float, total: float, limit: int
) -> GatewayError:
    """The GatewayError a failed transfer means (timeouts and lost connections are
    transient)."""
    if too_large or errno in (_TOO_LARGE, _WRITE_ABORTED):
        return GatewayProtocolError(f"answer larger than {limit} bytes")
    if errno == _TIMED_OUT:
        if not connected:
            # Nothing was written: the request certainly was not taken.
            return GatewayTimeout("connect timeout", definite=True)
        if seconds >= total * 0.98:
            return GatewayTimeout("total deadline exceeded")
        return GatewayTimeout("read timeout")
    if errno in _CONNECT_FAILURES:
        # Refused, DNS or TLS before the request went out: certainly not taken.
        return GatewayConnectionError(f"connection failed (curl error {errno})", definite=True)
    if errno in _CONNECTION_LOST:
        return GatewayConnectionError(f"{_CONNECTION_LOST[errno]} (curl error {errno})")
    if errno == _NOT_RESENT:
        return GatewayConnectionError(
            f"connection lost after the request was sent; not re-sent (curl error {errno})"
        )
    if errno in _CUT_OFF:
        return GatewayConnectionError(f"answer cut off (curl error {errno})")
    if errno in _UNREADABLE:
        return GatewayProtocolError(f"answer unreadable (curl error {errno})")
    return GatewayConnectionError(f"request failed (curl error {errno})")


class _Transfer:
    """One request in flight: where its answer goes, and the answer so far."""

    __slots__ = (
        "chunks",
        "future",
        "headers",
        "headers_seen",
        "last_read",
        "limit",
        "size",
        "started",
        "too_large",
    )

    def __init__(self, future: Future[Reply], limit: int, now: float) -> None:
        self.future = future
        self.limit = limit
        self.chunks: list[bytes] = []
        self.headers: list[bytes] = []
        self.size = 0
        self.too_large = False
        self.started = now
        self.last_read: float | None = None  # when answer bytes last arrived
        self.headers_seen = 0

    def write(self, data: bytes) -> int | None:
        self.last_read = time.monotonic()
        self.size += len(data)
        if self.size > self.limit:  # also a body sent without Content-Length
            self.too_large = True
            return 0  # libcurl aborts the transfer
        self.chunks.append(data)
        return None


def _trusted_cas() -> list[tuple[int, str]]:
    """libcurl options naming the trusted CAs: the ones Python's ssl module uses
    (SSL_CERT_FILE / SSL_CERT_DIR, else OpenSSL's defaults for this system).

    pycurl's wheels are built on another distribution and look for
    /etc/pki/tls/certs/ca-bundle.crt, which Debian-based systems and images lack: without
    this every HTTPS request fails with curl error 77 (pycurl issue 834)."""
    paths = ssl.get_default_verify_paths()
    options: list[tuple[int, str]] = []
    if paths.cafile:  # None when the file does not exist
        options.append((pycurl.CAINFO, paths.cafile))
    if paths.capath and os.path.isdir(paths.capath):
        options.append((pycurl.CAPATH, paths.capath))
    return options


class CurlPool:
    """A keep-alive connection pool and the thread that drives its transfers. Thread-safe."""

    def __init__(
        self,
        name: str,
        *,
        headers: Sequence[str],
        max_connections: int,
        connect_timeout: float,
        read_timeout: float,
        total_timeout: float,
        max_bytes: int,
    ) -> None:
        self.pid = os.getpid()
        self._headers = list(headers)  # holds the Authorization header: never shown
        self._connect_ms = max(1, round(connect_timeout * 1000))
        self._total = total_timeout
        self._total_ms = max(1, round(total_timeout * 1000))
        self._read_timeout = read_timeout
        self._next_read_check = 0.0
        self._max_bytes = max_bytes
        self._max_connections = max_connections
        self._cas = _trusted_cas()
        self._incoming: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._idle: list[pycurl.Curl] = []
        self._active: dict[pycurl.Curl, _Transfer] = {}
        self._watched: set[int] = set()
        self._timer_at: float | None = None
        self._broken: BaseException | None = None
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, _READ)
        self._multi = pycurl.CurlMulti()
        self._multi.setopt(pycurl.M_MAX_TOTAL_CONNECTIONS, max_connections)
        self._multi.setopt(pycurl.M_MAXCONNECTS, max_connections)
        self._multi.setopt(pycurl.M_SOCKETFUNCTION, self._on_socket)
        self._multi.setopt(pycurl.M_TIMERFUNCTION, self._on_timer)
        self._thread = threading.Thread(target=self._run, name=f"ip2sms-{name}", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"CurlPool(pid={self.pid}, max_connections={self._max_connections})"

    @property
    def stopped(self) -> bool:
        """Closed, or its thread died: it answers every request with an error."""
        return self._broken is not None

    # --- callers' side -------------------------------------------------------------------

    def submit(self, url: str, payloads: Sequence[bytes]) -> list[Future[Reply]]:
        """POST each payload to `url` without waiting: one future per payload, in order,
        each settled with its Reply as soon as that transfer ends (by its total deadline)."""
        futures: list[Future[Reply]] = [concurrent.futures.Future() for _ in payloads]
        if not payloads:
            return futures
        if self._broken is None:
            self._incoming.put((futures, url, payloads))
            self._wake()
            if self._broken is not None:  # closed meanwhile: _shutdown may have missed it
                _settle_all(futures, GatewayConnectionError(_STOPPED))
        else:
            _settle_all(futures, GatewayConnectionError(_STOPPED))
        return futures

    def deadline(self, requests: int) -> float:
        """Seconds by which `requests` submitted at once are certainly answered (each
        transfer ends by its total deadline; the margin covers waiting for a connection)."""
        return self._total * (1 + requests / self._max_connections) + 5

    def exchange(self, url: str, payloads: Sequence[bytes]) -> list[Reply]:
        """POST each payload to `url`, concurrently; one Reply per payload, in order."""
        futures = self.submit(url, payloads)
        if futures:
            concurrent.futures.wait(futures, self.deadline(len(futures)))
        return [late_reply(f, stopped=self._broken is not None) for f in futures]

    def close(self) -> None:
        """Stop the thread: transfers still running end as failed; idle connections close."""
        if self.pid != os.getpid() or not self._thread.is_alive():
            return
        self._incoming.put(None)
        self._wake()
        if threading.current_thread() is not self._thread:
            self._thread.join(5)

    def _wake(self) -> None:
        # A full buffer (already woken) or a closed pool: the thread wakes either way.
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    # --- the pool's thread ---------------------------------------------------------------

    def _run(self) -> None:
        try:
            while self._loop_once():
                pass
        except BaseException as exc:  # a bug here must not leave callers waiting
            self._broken = exc
        finally:
            self._shutdown()

    def _loop_once(self) -> bool:
        timeout = None
        if self._timer_at is not None:
            timeout = max(0.0, self._timer_at - time.monotonic())
        if self._active:
            until_check = max(0.0, self._next_read_check - time.monotonic())
            timeout = until_check if timeout is None else min(timeout, until_check)
        keep_going = True
        for key, mask in self._selector.select(timeout):
            if key.fileobj is self._wake_r:
                keep_going = self._admit()
            else:
                flags = (pycurl.CSELECT_IN if mask & _READ else 0) | (
                    pycurl.CSELECT_OUT if mask & _WRITE else 0
                )
                self._multi.socket_action(key.fd, flags)
        if self._timer_at is not None and time.monotonic() >= self._timer_at:
            self._timer_at = None
            self._multi.socket_action(pycurl.SOCKET_TIMEOUT, 0)
        self._collect()
        if self._active and time.monotonic() >= self._next_read_check:
            self._expire_reads()
        return keep_going

    def _expire_reads(self) -> None:
        """End every transfer whose answer has been silent longer than the read timeout."""
        now = time.monotonic()
        self._next_read_check = now + min(0.25, self._read_timeout / 4)
        for handle, transfer in list(self._active.items()):
            if len(transfer.headers) != transfer.headers_seen:  # header lines are answer bytes
                transfer.headers_seen = len(transfer.headers)
                transfer.last_read = now
            waiting_since = transfer.last_read
            if waiting_since is None:
                # Not a byte yet: the read clock starts once a connection carries the request.
                if now - transfer.started < self._read_timeout:
                    continue
                sent_after = float(handle.getinfo(pycurl.PRETRANSFER_TIME))
                if sent_after == 0:
                    continue  # still connecting or waiting for a pool connection
                waiting_since = transfer.started + sent_after
            if now - waiting_since >= self._read_timeout:
                self._active.pop(handle)
                self._multi.remove_handle(handle)
                error = GatewayTimeout("read timeout")
                self._settle(transfer, Reply(0, (), b"", now - transfer.started, error))
                handle.close()  # its connection is mid-answer: never reused

    def _admit(self) -> bool:
        """Start every transfer handed over since the last wake-up; False on close()."""
        with contextlib.suppress(BlockingIOError):
            while self._wake_r.recv(4096):
                pass
        while True:
            try:
                item = self._incoming.get_nowait()
            except queue.Empty:
                return True
            if item is None:
                return False
            futures, url, payloads = item
            now = time.monotonic()
            for future, payload in zip(futures, payloads, strict=True):
                transfer = _Transfer(future, self._max_bytes, now)
                handle = self._idle.pop() if self._idle else self._new_handle()
                handle.setopt(pycurl.URL, url)
                # The body through a read callback that cannot seek: libcurl re-sends a POST
                # by itself when a reused connection dies before any answer byte ("retrying
                # a fresh connect"), which needs a rewind; without one the transfer fails
                # (curl error 65) and one attempt stays one request the gateway sees.
                handle.setopt(pycurl.POSTFIELDSIZE_LARGE, len(payload))
                handle.setopt(pycurl.READFUNCTION, io.BytesIO(payload).read)
                handle.setopt(pycurl.WRITEFUNCTION, transfer.write)
                handle.setopt(pycurl.HEADERFUNCTION, transfer.headers.append)
                self._active[handle] = transfer
                self._multi.add_handle(handle)

    def _new_handle(self) -> pycurl.Curl:
        handle = pycurl.Curl()
        handle.setopt(pycurl.NOSIGNAL, 1)
        handle.setopt(pycurl.PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS)
        handle.setopt(pycurl.FOLLOWLOCATION, 0)
        handle.setopt(pycurl.POST, 1)
        handle.setopt(pycurl.PROXY, "")  # "" = no proxy, whatever the environment says
        handle.setopt(pycurl.NOPROXY, "*")
        handle.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_1_1)
        handle.setopt(pycurl.HTTPHEADER, self._headers)
        handle.setopt(pycurl.CONNECTTIMEOUT_MS, self._connect_ms)
        handle.setopt(pycurl.TIMEOUT_MS, self._total_ms)
        handle.setopt(pycurl.MAXFILESIZE_LARGE, self._max_bytes)
        for option, value in self._cas:
            handle.setopt(option, value)
        handle.setopt(pycurl.MAXAGE_CONN, 30)  # an idle keep-alive connection is not trusted longer
        return handle

    def _on_socket(self, what: int, fd: int, _multi: Any, _data: Any) -> None:
        if what == pycurl.POLL_REMOVE:
            if fd in self._watched:
                self._watched.discard(fd)
                self._selector.unregister(fd)
        elif fd in self._watched:
            self._selector.modify(fd, _EVENTS[what])
        else:
            self._watched.add(fd)
            self._selector.register(fd, _EVENTS[what])

    def _on_timer(self, milliseconds: int) -> None:
        self._timer_at = None if milliseconds < 0 else time.monotonic() + milliseconds / 1000

    def _collect(self) -> None:
        while True:
            queued, finished, failed = self._multi.info_read()
            for handle in finished:
                self._finish(handle, 0)
            for handle, errno, _message in failed:  # the message may quote the URL: unused
                self._finish(handle, errno)
            if not queued:
                return

    def _finish(self, handle: pycurl.Curl, errno: int) -> None:
        transfer = self._active.pop(handle)
        self._multi.remove_handle(handle)
        seconds = float(handle.getinfo(pycurl.TOTAL_TIME))
        if errno:
            error = _transfer_error(
                errno,
                too_large=transfer.too_large,
                # 0 until a connection is ready to carry the request (new or reused).
                connected=handle.getinfo(pycurl.PRETRANSFER_TIME) > 0,
                seconds=seconds,
                total=self._total,
                limit=self._max_bytes,
            )
            reply = Reply(0, (), b"", seconds, error)
        else:
            status = int(handle.getinfo(pycurl.RESPONSE_CODE))
            body = b"".join(transfer.chunks)
            reply = Reply(status, tuple(transfer.headers), body, seconds)
        # Drop the references this answer's callbacks hold before the handle is reused.
        handle.setopt(pycurl.WRITEFUNCTION, _discard)
        handle.setopt(pycurl.HEADERFUNCTION, _discard)
        handle.setopt(pycurl.READFUNCTION, _no_body)
        # Several batches can be in flight at once (more transfers than connections, the
        # rest queued in libcurl): keep their handles for the next ones.
        if len(self._idle) < _MAX_IDLE_HANDLES:
            self._idle.append(handle)
        else:
            handle.close()
        self._settle(transfer, reply)

    @staticmethod
    def _settle(transfer: _Transfer, reply: Reply) -> None:
        # Its callbacks (the client's conversion) run here, on the pool's thread.
        with contextlib.suppress(concurrent.futures.InvalidStateError):  # settled at close
            transfer.future.set_result(reply)

    def _shutdown(self) -> None:
        stopped = GatewayConnectionError(_STOPPED)
        for handle, transfer in list(self._active.items()):
            self._multi.remove_handle(handle)
            handle.close()
            self._settle(transfer, Reply(0, (), b"", 0.0, stopped))
        self._active.clear()
        self._broken = self._broken or RuntimeError("closed")
        while True:  # callers that handed work over after the close
            try:
                item = self._incoming.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                _settle_all(item[0], stopped)
        for handle in self._idle:
            handle.close()
        self._idle.clear()
        self._multi.close()
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()


def _settle_all(futures: Sequence[Future[Reply]], error: GatewayError) -> None:
    for future in futures:
        if not future.done():
            with contextlib.suppress(concurrent.futures.InvalidStateError):  # settled meanwhile
                future.set_result(Reply(0, (), b"", 0.0, error))


def late_reply(future: Future[Reply], *, stopped: bool = False) -> Reply:
    """The future's Reply, or, unanswered by its deadline (the pool's thread stuck or
    gone), the transient failure that means: a send retried later carries the same
    uniq_key."""
    if future.done():
        reply: Reply = future.result()
        return reply
    late = (
        GatewayConnectionError(_STOPPED) if stopped else GatewayTimeout("total deadline exceeded")
    )
    return Reply(0, (), b"", 0.0, late)


def _discard(_data: bytes) -> None:
    return None


def _no_body(_size: int) -> bytes:
    return b""


__all__ = ["CurlPool", "Future", "Reply", "late_reply"]
