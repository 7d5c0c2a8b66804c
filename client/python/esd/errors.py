"""Errors of esd: one exception class per error code of es.v1.ErrorCode.

Every exception raised by the client for a failed request is an EsdError
carrying ``code`` (the number on the wire, stable), ``name`` (the symbolic
name, e.g. "WRONG_EXPECTED_REVISION"), ``message`` (the server's or the
client's explanation) and ``conflicts`` (for WrongExpectedRevisionError:
every failed expectation check of the append or transaction, not only the
first). ``error_for(code)`` gives the class of a code.

The numbers and names equal those of proto/include/es/err.h and of the
ErrorCode enum of es.proto; a test keeps the three equal.
"""

import builtins
from dataclasses import dataclass
from typing import List, Optional

__all__ = [
    "Conflict",
    "EsdError",
    "error_for",
    "ERROR_TABLE",
]

# (number, NAME, class name, human message) — as in err.h.
ERROR_TABLE = [
    (1, "INTERNAL", "InternalError", "internal error"),
    (2, "INVALID_ARGUMENT", "InvalidArgumentError", "invalid argument"),
    (3, "INVALID_STREAM_ID", "InvalidStreamIdError", "invalid stream id"),
    (4, "INVALID_EVENT_TYPE", "InvalidEventTypeError", "invalid event type"),
    (5, "INVALID_EVENT_ID", "InvalidEventIdError", "invalid event id"),
    (6, "RESERVED_STREAM", "ReservedStreamError", "stream ids starting with '$' are reserved"),
    (7, "TOO_LARGE", "TooLargeError", "too large"),
    (8, "TOO_MANY_EVENTS", "TooManyEventsError", "too many events"),
    (9, "WRONG_EXPECTED_REVISION", "WrongExpectedRevisionError", "wrong expected revision"),
    (10, "IDEMPOTENCY_CONFLICT", "IdempotencyConflictError",
     "event ids already stored elsewhere, partly or with other content"),
    (11, "NOT_FOUND", "NotFoundError", "not found"),
    (12, "STORE_FULL", "StoreFullError", "store full"),
    (13, "CORRUPT", "CorruptError", "corrupt data"),
    (14, "IO", "IOError", "input/output error"),
    (15, "NO_MEMORY", "NoMemoryError", "out of memory"),
    (16, "INCOMPATIBLE_STORE", "IncompatibleStoreError", "incompatible or foreign data directory"),
    (17, "MALFORMED", "MalformedError", "malformed message"),
    (18, "UNKNOWN_REQUEST", "UnknownRequestError", "unknown request kind"),
    (19, "UNSUPPORTED_VERSION", "UnsupportedVersionError", "unsupported protocol version"),
    (20, "HANDSHAKE_REQUIRED", "HandshakeRequiredError", "hello required first"),
    (21, "UNAUTHENTICATED", "UnauthenticatedError", "authentication failed"),
    (22, "PERMISSION_DENIED", "PermissionDeniedError", "permission denied"),
    (23, "TOO_MANY_REQUESTS", "TooManyRequestsError", "too many requests in flight"),
    (24, "DUPLICATE_REQUEST_ID", "DuplicateRequestIdError", "request id already in flight"),
    (25, "SUBSCRIPTION_NOT_FOUND", "SubscriptionNotFoundError", "no such subscription"),
    (26, "TIMEOUT", "TimeoutError", "timed out"),
    (27, "CONNECTION", "ConnectionError", "cannot connect"),
    (28, "CLOSED", "ClosedError", "connection closed"),
    (29, "SHUTTING_DOWN", "ShuttingDownError", "server shutting down"),
    (30, "READ_ONLY", "ReadOnlyError", "store is read-only"),
    (31, "CIRCUIT_OPEN", "CircuitOpenError", "circuit breaker open"),
    (32, "REFUSED", "RefusedError", "command refused"),
    (33, "BUSY", "BusyError", "busy"),
    (34, "FOLLOWER", "FollowerError", "read-only follower: write to the primary"),
    (35, "SLOW_CONSUMER", "SlowConsumerError",
     "subscriber too slow: dropped to keep the server within its memory"),
    (36, "STREAM_DELETED", "StreamDeletedError", "stream deleted (tombstoned)"),
    (40, "ERASED", "ErasedError", "erased: the data key of the stream or subject was destroyed"),
    (41, "NOT_ERASABLE", "NotErasableError",
     "stored in plain (encryption was off when it was created): cannot be erased"),
    (42, "GROUP_NOT_FOUND", "GroupNotFoundError", "no such consumer group"),
    (43, "GROUP_EXISTS", "GroupExistsError", "consumer group already exists"),
    (44, "NOT_IN_FLIGHT", "NotInFlightError", "position not in flight with this member"),
    (45, "ALREADY_JOINED", "AlreadyJoinedError", "already a member of this group on this connection"),
]


@dataclass(frozen=True)
class Conflict:
    """One failed expectation check, as reported by the server.

    ``expected`` is the expectation of the request (an Expected);
    ``actual_exists`` whether the stream existed and ``actual_revision`` its
    last revision (None when it did not exist).
    """

    stream: str
    expected: object
    actual_exists: bool
    actual_revision: Optional[int]


class EsdError(Exception):
    """Base class of every error of the client; ``code`` is the wire number."""

    code = 0
    name = "UNKNOWN"
    default_message = "unknown error"

    def __init__(self, message: str = "", conflicts: Optional[List[Conflict]] = None):
        self.message = message or self.default_message
        self.conflicts = list(conflicts or [])
        super().__init__(self.message)

    def __str__(self) -> str:
        return f"{self.message} ({self.name})"


_BY_CODE = {}
_BUILTIN_BASES = {
    "TimeoutError": builtins.TimeoutError,
    "ConnectionError": builtins.ConnectionError,
    "IOError": builtins.OSError,
}

for _num, _name, _cls, _msg in ERROR_TABLE:
    _bases = (EsdError,) + ((_BUILTIN_BASES[_cls],) if _cls in _BUILTIN_BASES else ())
    _doc = f"Error code {_num}, {_name}: {_msg}."
    _klass = type(_cls, _bases, {"code": _num, "name": _name, "default_message": _msg,
                                 "__doc__": _doc, "__module__": __name__,
                                 "__str__": EsdError.__str__, "__init__": EsdError.__init__})
    globals()[_cls] = _klass
    _BY_CODE[_num] = _klass
    __all__.append(_cls)


def error_for(code: int) -> type:
    """The exception class of an error code (EsdError for a number outside the table)."""
    return _BY_CODE.get(code, EsdError)


def make_error(code: int, message: str = "", conflicts=None) -> EsdError:
    """An exception instance for a code; code 0 (OK) is reported as INTERNAL."""
    if code == 0:
        code = 1
    cls = error_for(code)
    err = cls(message, conflicts)
    if cls is EsdError:
        err.code = code
    return err
