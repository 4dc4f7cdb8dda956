"""Every way an IP2SMS request can fail, sorted into permanent and transient.

The send service needs exactly three facts about a failure: may it retry (``permanent``),
what to write in the log (``reason``: short, never a message body, a phone number, the
answer text or the password) and which metrics bucket it belongs to (``outcome``, one
of :data:`OUTCOMES`). ``retry_after`` carries the gateway's own back-off hint (HTTP 429).

Hierarchy::

    GatewayError
    ├── GatewayTimeout            transient  "timeout"     connect or read timed out
    ├── GatewayConnectionError    transient  "refused"     refused / reset / DNS
    ├── GatewayHTTPError          by status  "http_4xx" | "http_5xx"
    │   ├── GatewayAuthError      permanent  "auth"        401 / 403
    │   └── GatewayThrottled      transient  "http_429"    429 (+ retry_after)
    ├── GatewayProtocolError      transient  "parse_error" not the expected XML, too large,
    │                                                      DTD / entities, unknown status
    ├── GatewayRequestInvalid     permanent  "invalid_request" our request could not be
    │                                                      built (nothing was sent)
    └── GatewayRejected           permanent  "rejected"    <state error="...">Rejected</state>
        ├── GatewayDuplicate      permanent  "rejected"    uniq_key dupe: already submitted
        └── GatewayCreditsExhausted transient "rejected"   prepaid limit / bill error

Exceptions pickle with all their attributes (Celery ships them between processes).
"""

from __future__ import annotations

import enum
from typing import Any, Final


class Outcome(enum.StrEnum):
    """How a gateway request ended, as a bounded metrics label: OK or its failure."""

    OK = "ok"
    TIMEOUT = "timeout"
    REFUSED = "refused"
    HTTP_4XX = "http_4xx"
    HTTP_5XX = "http_5xx"
    HTTP_429 = "http_429"
    PARSE_ERROR = "parse_error"
    REJECTED = "rejected"
    AUTH = "auth"
    INVALID_REQUEST = "invalid_request"


# What a GatewayError can carry: every outcome but OK.
OUTCOMES: Final[frozenset[Outcome]] = frozenset(o for o in Outcome if o is not Outcome.OK)

DUPLICATE_ERRORS: Final[frozenset[str]] = frozenset({"uniq_key dupe"})
CREDIT_ERRORS: Final[frozenset[str]] = frozenset(
    {"prepaid messages limit exceed", "prepaid bill error"}
)

_MAX_REASON = 200


def _clip(text: str) -> str:
    # Reasons end up in log lines and database columns of bounded size.
    text = " ".join(text.split())
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 1] + "…"


class GatewayError(Exception):
    """Base class: a request to the gateway did not produce a usable answer.

    Attributes:
        permanent: ``True`` when repeating the same request cannot succeed.
        reason: short text safe to log and store.
        outcome: bounded metrics label, one of :data:`OUTCOMES`.
        retry_after: seconds the gateway asked us to wait, if it said so.
    """

    default_permanent: bool = False
    default_outcome: Outcome = Outcome.PARSE_ERROR
    default_definite: bool = False

    def __init__(
        self,
        reason: str,
        *,
        permanent: bool | None = None,
        outcome: Outcome | None = None,
        retry_after: float | None = None,
        definite: bool | None = None,
    ) -> None:
        self.reason = _clip(reason)
        # True when the request certainly was not taken (refused before it was written,
        # or an HTTP error status): safe to send elsewhere (docs/gateways.md).
        self.definite = self.default_definite if definite is None else definite
        self.permanent = self.default_permanent if permanent is None else permanent
        self.outcome = Outcome(outcome) if outcome else self.default_outcome
        self.retry_after = retry_after
        super().__init__(self.reason)

    def __str__(self) -> str:
        return self.reason

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(reason={self.reason!r}, permanent={self.permanent}, "
            f"outcome={self.outcome.value!r}, retry_after={self.retry_after!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # The default reduce calls cls(*args), which would lose the keyword attributes.
        return (_rebuild, (type(self), self.__dict__.copy()))


def _rebuild(cls: type[GatewayError], state: dict[str, Any]) -> GatewayError:
    obj = cls.__new__(cls)
    Exception.__init__(obj, state.get("reason", ""))
    obj.__dict__.update(state)
    return obj


class GatewayTimeout(GatewayError):  # noqa: N818 - names fixed by the interface
    """Connecting or waiting for the answer took too long. Transient.

    The gateway may still have accepted the message: retry with the same ``uniq_key``.
    """

    default_outcome: Outcome = Outcome.TIMEOUT


class GatewayConnectionError(GatewayError):
    """The connection was refused, reset or could not be opened. Transient."""

    default_outcome: Outcome = Outcome.REFUSED


class GatewayHTTPError(GatewayError):
    """The gateway answered with an HTTP status other than 2xx.

    5xx and 408 are transient (``http_5xx`` / ``http_4xx``); any other 4xx is permanent
    (``http_4xx``). Use :meth:`from_status` to get the right subclass for 401/403/429.
    """

    def __init__(
        self,
        status_code: int,
        reason: str | None = None,
        *,
        permanent: bool | None = None,
        outcome: Outcome | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status_code = status_code
        if outcome is None:
            outcome = Outcome.HTTP_5XX if status_code >= 500 else Outcome.HTTP_4XX
        if permanent is None:
            permanent = 400 <= status_code < 500 and status_code != 408
        super().__init__(
            reason or f"HTTP {status_code}",
            permanent=permanent,
            outcome=outcome,
            retry_after=retry_after,
            # An HTTP error status comes before any acceptance: the message was not taken.
            definite=True,
        )

    @staticmethod
    def from_status(status_code: int, retry_after: float | None = None) -> GatewayHTTPError:
        """The error class that fits an HTTP status code."""
        if status_code in (401, 403):
            return GatewayAuthError(status_code)
        if status_code == 429:
            return GatewayThrottled(status_code, retry_after=retry_after)
        return GatewayHTTPError(status_code, retry_after=retry_after)


class GatewayAuthError(GatewayHTTPError):
    """HTTP 401/403: the login or password is wrong. Permanent, outcome ``auth``.

    Every further request with the same credentials fails too: stop the account.
    """

    def __init__(self, status_code: int = 401, reason: str | None = None, **kw: Any) -> None:
        kw.setdefault("permanent", True)
        kw.setdefault("outcome", Outcome.AUTH)
        super().__init__(status_code, reason or f"HTTP {status_code}: credentials refused", **kw)


class GatewayThrottled(GatewayHTTPError):  # noqa: N818 - names fixed by the interface
    """HTTP 429: too many requests. Transient; ``retry_after`` is the gateway's hint."""

    def __init__(self, status_code: int = 429, reason: str | None = None, **kw: Any) -> None:
        kw.setdefault("permanent", False)
        kw.setdefault("outcome", Outcome.HTTP_429)
        super().__init__(status_code, reason or f"HTTP {status_code}: throttled", **kw)


class GatewayProtocolError(GatewayError):
    """The answer is not the IP2SMS XML we expect. Transient, outcome ``parse_error``.

    Covers plain-text answers (``Request not recognized - xml parse failed``), ``<error>``
    bodies, malformed XML, answers over the size limit, DTDs/entities (refused unexpanded)
    and unknown status words.
    """

    default_outcome: Outcome = Outcome.PARSE_ERROR


class GatewayRequestInvalid(GatewayError):  # noqa: N818 - named like its siblings
    """Our request could not be built (e.g. a character XML 1.0 cannot carry). Permanent,
    outcome ``invalid_request``: nothing was sent, and sending the same data again cannot
    succeed. The reason names the field and code point, never the text."""

    default_permanent: bool = True
    default_outcome: Outcome = Outcome.INVALID_REQUEST


class GatewayRejected(GatewayError):  # noqa: N818 - names fixed by the interface
    """The gateway refused the message (``Rejected`` with a reason). Permanent.

    ``error`` holds the gateway's reason verbatim (e.g. ``Invalid abonent number``); it
    is a fixed vocabulary of the gateway, not user text. Use :func:`rejection` to get the
    right subclass for a reason.
    """

    default_permanent: bool = True
    default_outcome: Outcome = Outcome.REJECTED
    duplicate: bool = False

    def __init__(self, error: str | None, reason: str | None = None, **kw: Any) -> None:
        self.error = _clip(error) if error else None
        super().__init__(reason or f"rejected: {self.error or 'no reason given'}", **kw)


class GatewayDuplicate(GatewayRejected):
    """``uniq_key dupe``: the gateway already has a message with this ``uniq_key``.

    Permanent (resending cannot help) and ``duplicate=True``: an earlier attempt whose
    answer we lost was accepted, so the send service treats the message as submitted.
    """

    duplicate: bool = True


class GatewayCreditsExhausted(GatewayRejected):
    """``Prepaid messages limit exceed`` / ``Prepaid bill error``: the account is out of
    credit. Transient (``permanent=False``): pause the account and retry later.
    """

    default_permanent: bool = False


def rejection(error: str | None) -> GatewayRejected:
    """The :class:`GatewayRejected` subclass for a gateway rejection reason."""
    key = (error or "").strip().lower()
    if key in DUPLICATE_ERRORS:
        return GatewayDuplicate(error)
    if key in CREDIT_ERRORS:
        return GatewayCreditsExhausted(error)
    return GatewayRejected(error)


__all__ = [
    "CREDIT_ERRORS",
    "DUPLICATE_ERRORS",
    "OUTCOMES",
    "GatewayAuthError",
    "GatewayConnectionError",
    "GatewayCreditsExhausted",
    "GatewayDuplicate",
    "GatewayError",
    "GatewayHTTPError",
    "GatewayProtocolError",
    "GatewayRejected",
    "GatewayRequestInvalid",
    "GatewayThrottled",
    "GatewayTimeout",
    "Outcome",
    "rejection",
]
