"""tatzelwurm: Python client for the tatzelwurm task queue and message broker.

* :func:`connect` / :class:`Client` — asyncio actioner API (add, play, pause, kill, list, show,
  wait), RPC and broadcast.
* :class:`Worker` — the worker runner (coroutine and blocking handlers, heartbeats, control,
  reconnect and reclaim).
* :class:`TatzelwurmCommunicator` / :func:`communicator.connect` — a drop-in for kiwipy's
  ``RmqThreadCommunicator`` (plumpy, AiiDA); :class:`AsyncTatzelwurmCommunicator` for asyncio code.
* :mod:`tatzelwurm.protocol` — the wire codec; every coordinator error code is an exception
  class deriving from :class:`TatzelwurmError`.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .client import Client, ClientClosed, RemoteError, connect
from .communicator import AsyncTatzelwurmCommunicator, TatzelwurmCommunicator, connect_async
from .config import ConfigurationError, Endpoint, resolve_endpoint
from .protocol import (
    AuthFailed,
    ConnectionLost,
    DeliveryFailed,
    DeliveryPolicy,
    DuplicateIdentifier,
    ErrorCode,
    Filter,
    FilterKind,
    IllegalTransition,
    InvalidRequest,
    NotAllowedForRole,
    ProtocolError,
    StoreUnavailable,
    TaskInfo,
    TaskSpec,
    TaskState,
    TatzelwurmError,
    UnknownIdentifier,
    UnknownTask,
    UnknownWorker,
    Unroutable,
)
from .worker import CancelToken, TaskContext, TaskExit, TaskKilled, Worker

__all__ = [
    "__version__",
    "Client", "ClientClosed", "RemoteError", "connect",
    "AsyncTatzelwurmCommunicator", "TatzelwurmCommunicator", "connect_async",
    "ConfigurationError", "Endpoint", "resolve_endpoint",
    "AuthFailed", "ConnectionLost", "DeliveryFailed", "DeliveryPolicy", "DuplicateIdentifier", "ErrorCode",
    "Filter", "FilterKind", "IllegalTransition", "InvalidRequest", "NotAllowedForRole", "ProtocolError",
    "StoreUnavailable", "TaskInfo", "TaskSpec", "TaskState", "TatzelwurmError", "UnknownIdentifier",
    "UnknownTask", "UnknownWorker", "Unroutable",
    "CancelToken", "TaskContext", "TaskExit", "TaskKilled", "Worker",
]
