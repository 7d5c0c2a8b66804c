"""esd: the Python client of the esd event store.

    import esd
    with esd.Client("127.0.0.1:7400") as c:
        c.append("account-1", [esd.Event("AccountOpened", {"owner": "Alice"})],
                 expected=esd.NO_STREAM)
        for ev in c.read_stream("account-1"):
            print(ev.revision, ev.type, ev.json())

esd.Client is blocking; esd.aio.Client has the same surface for asyncio.
Every failure raises an esd.EsdError subclass, one per error code of the
protocol (esd.WrongExpectedRevisionError, esd.NotFoundError, ...).
"""

from . import errors
from ._core import BREAKER_CLOSED, BREAKER_HALF_OPEN, BREAKER_OPEN, DEFAULT_ADDRESS
from .client import Client, PendingAppend, Subscription
from .group import GroupMember
from .errors import *  # noqa: F401,F403 - one class per error code
from .errors import Conflict, EsdError, error_for
from .types import (ANY, END, NO_STREAM, STREAM_EXISTS, AppendResult, CaughtUp, Erased, Event,
                    Expected, GroupState, ParkedEvent, RecordedEvent, ServerInfo, Snapshot, Stats,
                    StreamDeleted, StreamInfo, StreamMetadata, uuid7)

__version__ = "0.1.0"

__all__ = [
    "ANY", "END", "NO_STREAM", "STREAM_EXISTS", "AppendResult", "BREAKER_CLOSED",
    "BREAKER_HALF_OPEN", "BREAKER_OPEN", "CaughtUp", "Client", "Conflict", "DEFAULT_ADDRESS",
    "Erased", "EsdError", "Event", "Expected", "GroupMember", "GroupState", "ParkedEvent",
    "PendingAppend", "RecordedEvent", "ServerInfo", "Snapshot",
    "Stats", "StreamDeleted", "StreamInfo", "StreamMetadata", "Subscription", "error_for",
    "uuid7",
] + [c for _, _, c, _ in errors.ERROR_TABLE]
