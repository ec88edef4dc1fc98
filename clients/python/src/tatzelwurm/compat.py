"""kiwipy's types when kiwipy is importable, equivalents with the same names and behaviour otherwise.

plumpy and AiiDA test ``isinstance(x, kiwipy.Future)`` and catch kiwipy's exception classes, so
when kiwipy is installed the communicator must use *its* classes; without it (our machines have
no PyPI) these stand-ins keep the same hierarchy: ``Future`` is ``concurrent.futures.Future``,
``TimeoutError`` is ``concurrent.futures.TimeoutError``, ``UnroutableError`` derives from
``DeliveryFailed``.
"""

from __future__ import annotations

import concurrent.futures
import re
from typing import Any, Callable

__all__ = [
    "HAVE_KIWIPY", "Future", "CancelledError", "TimeoutError", "RemoteException", "DeliveryFailed",
    "UnroutableError", "TaskRejected", "DuplicateSubscriberIdentifier", "CommunicatorClosed",
    "InvalidStateError", "QueueEmpty", "Communicator", "BroadcastFilter",
]

try:  # pragma: no cover - depends on the environment
    import kiwipy as _kiwipy

    HAVE_KIWIPY = True
    Future = _kiwipy.Future
    CancelledError = _kiwipy.CancelledError
    TimeoutError = _kiwipy.TimeoutError  # noqa: A001
    RemoteException = _kiwipy.RemoteException
    DeliveryFailed = _kiwipy.DeliveryFailed
    UnroutableError = _kiwipy.UnroutableError
    TaskRejected = _kiwipy.TaskRejected
    DuplicateSubscriberIdentifier = _kiwipy.DuplicateSubscriberIdentifier
    CommunicatorClosed = _kiwipy.CommunicatorClosed
    InvalidStateError = _kiwipy.InvalidStateError
    QueueEmpty = _kiwipy.QueueEmpty
    Communicator = _kiwipy.Communicator
    BroadcastFilter = _kiwipy.BroadcastFilter
except ImportError:
    HAVE_KIWIPY = False
    import abc

    Future = concurrent.futures.Future
    CancelledError = concurrent.futures.CancelledError
    TimeoutError = concurrent.futures.TimeoutError  # noqa: A001

    class RemoteException(Exception):  # type: ignore[no-redef]
        """An exception occurred at the remote end of the call."""

    class DeliveryFailed(Exception):  # type: ignore[no-redef]
        """Failed to deliver a message."""

    class UnroutableError(DeliveryFailed):  # type: ignore[no-redef]
        """The message was unroutable."""

    class TaskRejected(Exception):  # type: ignore[no-redef]
        """A task was rejected at the remote end."""

    class QueueEmpty(Exception):  # type: ignore[no-redef]
        """Could not get the next message from the queue because it is empty."""

    class DuplicateSubscriberIdentifier(Exception):  # type: ignore[no-redef]
        """Failed to add a subscriber because the identifier supplied is already in use."""

    class CommunicatorClosed(Exception):  # type: ignore[no-redef]
        """Raised when an operation is attempted on a closed communicator."""

    class InvalidStateError(Exception):  # type: ignore[no-redef]
        """Raised when an object is in an invalid state to perform the desired action."""

    class Communicator:  # type: ignore[no-redef]
        """The interface of ``kiwipy.Communicator``."""

        @abc.abstractmethod
        def is_closed(self) -> bool: ...

        @abc.abstractmethod
        def close(self) -> None: ...

        @abc.abstractmethod
        def add_rpc_subscriber(self, subscriber: Any, identifier: Any = None) -> Any: ...

        @abc.abstractmethod
        def remove_rpc_subscriber(self, identifier: Any) -> None: ...

        @abc.abstractmethod
        def add_task_subscriber(self, subscriber: Any, identifier: Any = None) -> Any: ...

        @abc.abstractmethod
        def remove_task_subscriber(self, identifier: Any) -> None: ...

        @abc.abstractmethod
        def add_broadcast_subscriber(self, subscriber: Any, identifier: Any = None) -> Any: ...

        @abc.abstractmethod
        def remove_broadcast_subscriber(self, identifier: Any) -> None: ...

        @abc.abstractmethod
        def task_send(self, task: Any, no_reply: bool = False) -> Any: ...

        @abc.abstractmethod
        def rpc_send(self, recipient_id: Any, msg: Any) -> Any: ...

        @abc.abstractmethod
        def broadcast_send(self, body: Any, sender: Any = None, subject: Any = None,
                           correlation_id: Any = None) -> Any: ...

    class BroadcastFilter:  # type: ignore[no-redef]
        """Filters broadcasts by subject and sender, exactly like ``kiwipy.BroadcastFilter``:
        a string filter is a glob (``*`` wildcard, ``.`` literal) matched at the start of the value,
        a compiled pattern is ``.match``-ed, anything else means equality, and a None sender or
        subject passes every filter."""

        def __init__(self, subscriber: Callable[..., Any], subject: Any = None, sender: Any = None) -> None:
            self._subscriber = subscriber
            self._subject_filters: list[Callable[[Any], Any]] = []
            self._sender_filters: list[Callable[[Any], Any]] = []
            if subject is not None:
                self.add_subject_filter(subject)
            if sender is not None:
                self.add_sender_filter(sender)

        @property
        def __name__(self) -> str:
            return "BroadcastFilter"

        def __call__(self, communicator: Any, body: Any, sender: Any = None, subject: Any = None,
                     correlation_id: Any = None) -> Any:
            if subject is not None and self._subject_filters and \
                    not any(check(subject) for check in self._subject_filters):
                return None
            if sender is not None and self._sender_filters and \
                    not any(check(sender) for check in self._sender_filters):
                return None
            return self._subscriber(communicator, body, sender, subject, correlation_id)

        def add_subject_filter(self, subject_filter: Any) -> None:
            self._subject_filters.append(self._ensure_filter(subject_filter))

        def add_sender_filter(self, sender_filter: Any) -> None:
            self._sender_filters.append(self._ensure_filter(sender_filter))

        @classmethod
        def _ensure_filter(cls, filter_value: Any) -> Callable[[Any], Any]:
            if isinstance(filter_value, str):
                return re.compile(filter_value.replace(".", "[.]").replace("*", ".*")).match
            if isinstance(filter_value, re.Pattern):
                return filter_value.match
            return lambda val: val == filter_value
