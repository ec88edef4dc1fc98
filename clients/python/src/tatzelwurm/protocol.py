"""The tatzelwurm wire protocol, version 1 (docs/protocol.md).

Framing (§1): every frame is a 4-byte big-endian unsigned length ``N`` followed by ``N`` bytes
holding one MessagePack value, the envelope ``[code, [field0, field1, ...]]`` (§2).

Every message of §6 is a frozen dataclass here whose fields are declared in wire order; nested
records (``HeldTask``, ``TaskSpec``, ``TaskInfo`` ...) are dataclasses too and travel as arrays.
:func:`encode_body` / :func:`decode_body` convert between messages and bodies; they produce the
smallest MessagePack representation of every value (what the C# codec does), so golden frames
re-encode byte for byte.

Error codes (§4) are exceptions: :class:`TatzelwurmError` carries ``.code``; every code has its
own subclass (``UnknownTask``, ``IllegalTransition``, ``Unroutable`` ...) built by
:func:`error_from_code`.
"""

from __future__ import annotations

import dataclasses
import enum
import struct
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import msgpack

__all__ = [
    "PROTOCOL_VERSION",
    "HEADER_SIZE",
    "DEFAULT_MAX_FRAME",
    "MAX_REPORTS_PER_TASK_UPDATES",
    "TaskState",
    "DeliveryPolicy",
    "TaskUpdateKind",
    "ControlAction",
    "TaskAction",
    "WorkerAction",
    "RpcResponseKind",
    "FilterKind",
    "ErrorCode",
    "Message",
    "Request",
    "Reply",
    "MESSAGE_TYPES",
    "encode_body",
    "decode_body",
    "encode_frame",
    "decode_frame",
    "FrameDecoder",
    "TatzelwurmError",
    "ProtocolError",
    "ConnectionLost",
    "error_from_code",
]

PROTOCOL_VERSION = 1
HEADER_SIZE = 4
DEFAULT_MAX_FRAME = 16 * 1024 * 1024
# Most reports in one TaskUpdates: the coordinator refuses a longer list whole (InvalidRequest).
MAX_REPORTS_PER_TASK_UPDATES = 4096
_LENGTH = struct.Struct(">I")


# ---- enumerations (§5) --------------------------------------------------------------------


class TaskState(enum.IntEnum):
    CREATED = 0
    READY = 1
    SUBMIT = 2
    RUN = 3
    PAUSE = 4
    TERMINATED = 5

    @property
    def label(self) -> str:
        return self.name.lower()


class DeliveryPolicy(enum.IntEnum):
    DEFAULT = 0
    AT_MOST_ONCE = 1
    AT_LEAST_ONCE = 2


class TaskUpdateKind(enum.IntEnum):
    ACCEPTED = 1
    REJECTED = 2
    PAUSED = 3
    RESUMED = 4
    PENDING = 5
    FINISHED = 6


class ControlAction(enum.IntEnum):
    """``ControlTask`` actions, coordinator → worker."""

    PAUSE = 1
    PLAY = 2
    KILL = 3
    DROP = 4
    ABANDON = 5


class TaskAction(enum.IntEnum):
    """``ControlTasks`` actions, actioner → coordinator."""

    PLAY = 1
    PAUSE = 2
    KILL = 3


class WorkerAction(enum.IntEnum):
    DRAIN = 1
    STOP = 2
    UNDRAIN = 3


class RpcResponseKind(enum.IntEnum):
    PENDING = 1
    VALUE = 2
    ERROR = 3


class FilterKind(enum.IntEnum):
    GLOB = 1
    REGEX = 2


class ErrorCode(enum.IntEnum):
    BAD_FRAME = 1
    UNSUPPORTED_VERSION = 2
    AUTH_FAILED = 3
    NOT_ALLOWED_FOR_ROLE = 4
    UNKNOWN_MESSAGE = 5
    INVALID_REQUEST = 6
    UNKNOWN_TASK = 7
    ILLEGAL_TRANSITION = 8
    UNKNOWN_WORKER = 9
    STORE_UNAVAILABLE = 10
    UNROUTABLE = 11
    DELIVERY_FAILED = 12
    DUPLICATE_IDENTIFIER = 13
    UNKNOWN_IDENTIFIER = 14
    HANDSHAKE_REQUIRED = 15
    FRAME_TOO_LARGE = 16
    INTERNAL = 17
    SHUTTING_DOWN = 18
    OVERLOADED = 19


# ---- errors (§4) --------------------------------------------------------------------------


class TatzelwurmError(Exception):
    """An error reported by the coordinator (or detected by the client).

    ``code`` is the protocol error code (an :class:`ErrorCode`, or ``None`` for client-side
    conditions such as a lost connection); ``message`` the coordinator's text.
    """

    code: ErrorCode | int | None = None

    def __init__(self, message: str = "", *, code: ErrorCode | int | None = None, request_id: int = 0) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message
        self.request_id = request_id

    def __str__(self) -> str:
        name = self.code.name if isinstance(self.code, ErrorCode) else self.code
        return f"{self.message} ({name})" if name is not None else self.message


class ProtocolError(TatzelwurmError):
    """The peer sent something that is not a valid frame or message of this protocol."""


class ConnectionLost(TatzelwurmError):
    """The connection to the coordinator closed before the reply arrived."""


def _error_class(name: str, code: ErrorCode, doc: str) -> type[TatzelwurmError]:
    return type(name, (TatzelwurmError,), {"code": code, "__doc__": doc, "__module__": __name__})


BadFrame = _error_class("BadFrame", ErrorCode.BAD_FRAME, "The frame was malformed; the connection is closed.")
UnsupportedVersion = _error_class("UnsupportedVersion", ErrorCode.UNSUPPORTED_VERSION, "Protocol version refused.")
AuthFailed = _error_class("AuthFailed", ErrorCode.AUTH_FAILED, "Wrong token.")
NotAllowedForRole = _error_class("NotAllowedForRole", ErrorCode.NOT_ALLOWED_FOR_ROLE, "Message not allowed for the role.")
UnknownMessage = _error_class("UnknownMessage", ErrorCode.UNKNOWN_MESSAGE, "Unknown message code.")
InvalidRequest = _error_class("InvalidRequest", ErrorCode.INVALID_REQUEST, "A field is missing or out of range.")
UnknownTask = _error_class("UnknownTask", ErrorCode.UNKNOWN_TASK, "No task with that id.")
IllegalTransition = _error_class("IllegalTransition", ErrorCode.ILLEGAL_TRANSITION, "The task's state does not allow that.")
UnknownWorker = _error_class("UnknownWorker", ErrorCode.UNKNOWN_WORKER, "No worker with that id or name.")
StoreUnavailable = _error_class("StoreUnavailable", ErrorCode.STORE_UNAVAILABLE, "The change was not persisted.")
Unroutable = _error_class("Unroutable", ErrorCode.UNROUTABLE, "Nobody holds the RPC identifier.")
DeliveryFailed = _error_class("DeliveryFailed", ErrorCode.DELIVERY_FAILED, "The RPC recipient went away.")
DuplicateIdentifier = _error_class("DuplicateIdentifier", ErrorCode.DUPLICATE_IDENTIFIER, "Identifier already registered.")
UnknownIdentifier = _error_class("UnknownIdentifier", ErrorCode.UNKNOWN_IDENTIFIER, "Identifier not registered here.")
HandshakeRequired = _error_class("HandshakeRequired", ErrorCode.HANDSHAKE_REQUIRED, "First frame was not Hello.")
FrameTooLarge = _error_class("FrameTooLarge", ErrorCode.FRAME_TOO_LARGE, "Frame over the maximum size.")
Internal = _error_class("Internal", ErrorCode.INTERNAL, "A coordinator bug; see its log.")
ShuttingDown = _error_class("ShuttingDown", ErrorCode.SHUTTING_DOWN, "The coordinator is stopping.")
Overloaded = _error_class("Overloaded", ErrorCode.OVERLOADED, "Outbound buffer overflowed; connection closed.")

ERROR_CLASSES: dict[int, type[TatzelwurmError]] = {
    cls.code: cls  # type: ignore[misc]
    for cls in (
        BadFrame, UnsupportedVersion, AuthFailed, NotAllowedForRole, UnknownMessage, InvalidRequest,
        UnknownTask, IllegalTransition, UnknownWorker, StoreUnavailable, Unroutable, DeliveryFailed,
        DuplicateIdentifier, UnknownIdentifier, HandshakeRequired, FrameTooLarge, Internal,
        ShuttingDown, Overloaded,
    )
}
__all__ += [cls.__name__ for cls in ERROR_CLASSES.values()]


def error_from_code(code: int, message: str, request_id: int = 0) -> TatzelwurmError:
    """The exception for an ``Error`` frame: the subclass for ``code``, or the base class."""
    cls = ERROR_CLASSES.get(code)
    if cls is None:
        return TatzelwurmError(message, code=code, request_id=request_id)
    return cls(message, request_id=request_id)


# ---- records and messages -----------------------------------------------------------------

# Field metadata: "record" names the dataclass a field holds (a nested array); "many" marks a
# list of such records; "enum" converts an int to an IntEnum on decode (unknown values stay int);
# "added" marks a trailing field appended after version 1 shipped: a peer that predates it sends
# the shorter array, which decodes to the field's default.
_T = TypeVar("_T")


def _rec(cls: type, *, many: bool = False, default: Any = dataclasses.MISSING) -> Any:
    return field(default=default, metadata={"record": cls, "many": many})


def _enum(cls: type[enum.IntEnum], default: Any = dataclasses.MISSING) -> Any:
    return field(default=default, metadata={"enum": cls})


def _added(default: Any) -> Any:
    return field(default=default, metadata={"added": True})


class _Record:
    """Base of everything that travels as a MessagePack array of its fields."""

    def to_wire(self) -> list[Any]:
        out: list[Any] = []
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if "record" in f.metadata and value is not None:
                value = [v.to_wire() for v in value] if f.metadata["many"] else value.to_wire()
            elif isinstance(value, tuple):
                value = list(value)
            out.append(value)
        return out

    @classmethod
    def from_wire(cls: type[_T], raw: Any) -> _T:
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]
        required = sum(1 for f in fields if "added" not in f.metadata)
        if not isinstance(raw, (list, tuple)) or len(raw) < required:
            raise ProtocolError(f"{cls.__name__}: expected {len(fields)} fields, got {raw!r}",
                                code=ErrorCode.BAD_FRAME)
        values: list[Any] = []
        for f, value in zip(fields, raw):
            meta = f.metadata
            if "record" in meta and value is not None:
                rec = meta["record"]
                value = [rec.from_wire(v) for v in value] if meta["many"] else rec.from_wire(value)
            elif "enum" in meta and isinstance(value, int) and not isinstance(value, bool):
                try:
                    value = meta["enum"](value)
                except ValueError:
                    pass
            values.append(value)
        return cls(*values)


class Message(_Record):
    """A frame body: ``[CODE, fields]``."""

    CODE: ClassVar[int]


class Request(Message):
    """A message that gets exactly one final reply carrying its ``request_id``."""

    request_id: int


class Reply(Message):
    """A reply or a progress notice correlated with a request by ``request_id``."""

    request_id: int


# Records --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeldTask(_Record):
    task_id: int
    paused: bool


@dataclass(frozen=True)
class TaskSpec(_Record):
    payload: bytes
    type: str
    priority: int = 0
    tags: list[str] = field(default_factory=list)
    policy: DeliveryPolicy | int = _enum(DeliveryPolicy, DeliveryPolicy.DEFAULT)
    ready: bool = True
    no_reply: bool = False


class _Failure:
    """A refused item of a batch (a task of ControlTasks, a report of TaskUpdates) as an exception."""

    code: ErrorCode | int
    message: str

    def error(self) -> TatzelwurmError:
        return error_from_code(int(self.code), self.message)


@dataclass(frozen=True)
class TaskFailure(_Record, _Failure):
    task_id: int
    code: ErrorCode | int = _enum(ErrorCode)
    message: str


@dataclass(frozen=True)
class TransitionInfo(_Record):
    state: TaskState | int = _enum(TaskState)
    at_ms: int
    reason: str | None


@dataclass(frozen=True)
class TaskInfo(_Record):
    id: int
    state: TaskState | int = _enum(TaskState)
    type: str
    priority: int
    tags: list[str]
    policy: DeliveryPolicy | int = _enum(DeliveryPolicy)
    worker: str | None
    attempts: int
    exit_code: int | None
    created_at_ms: int
    updated_at_ms: int
    reason: str | None
    payload_size: int
    history: list[TransitionInfo] = _rec(TransitionInfo, many=True)
    worker_lease: str | None
    has_result: bool
    no_reply: bool


@dataclass(frozen=True)
class WorkerInfo(_Record):
    worker_id: str
    name: str
    types: list[str]
    slots: int
    load: int
    state: str
    last_seen_ms: int
    connected_at_ms: int
    draining: bool


@dataclass(frozen=True)
class TagLimitInfo(_Record):
    tag: str
    limit: int
    running: int


@dataclass(frozen=True)
class Filter(_Record):
    """A broadcast filter: the pattern is matched at the start of the value (§6, Broadcast)."""

    kind: FilterKind | int = _enum(FilterKind)
    pattern: str

    @classmethod
    def glob(cls, pattern: str) -> Filter:
        return cls(FilterKind.GLOB, pattern)

    @classmethod
    def regex(cls, pattern: str) -> Filter:
        return cls(FilterKind.REGEX, pattern)


# Handshake and generic ------------------------------------------------------------------------


@dataclass(frozen=True)
class Hello(Message):
    CODE: ClassVar[int] = 1
    version: int
    role: str
    token: str
    client: str


@dataclass(frozen=True)
class Welcome(Message):
    CODE: ClassVar[int] = 2
    version: int
    session_id: str
    heartbeat_ms: int
    lease_ms: int
    max_frame: int


@dataclass(frozen=True)
class Error(Reply):
    CODE: ClassVar[int] = 3
    request_id: int
    code: ErrorCode | int = _enum(ErrorCode)
    message: str

    def exception(self) -> TatzelwurmError:
        return error_from_code(int(self.code), self.message, self.request_id)


@dataclass(frozen=True)
class Ok(Reply):
    CODE: ClassVar[int] = 4
    request_id: int


# Workers ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegisterWorker(Request):
    CODE: ClassVar[int] = 10
    request_id: int
    worker_id: str
    name: str
    types: list[str]
    slots: int
    held: list[HeldTask] = _rec(HeldTask, many=True)
    batches: bool = _added(False)


@dataclass(frozen=True)
class WorkerRegistered(Reply):
    CODE: ClassVar[int] = 11
    request_id: int
    drop: list[int]
    batches: bool = _added(False)


@dataclass(frozen=True)
class Heartbeat(Message):
    CODE: ClassVar[int] = 12
    sequence: int


@dataclass(frozen=True)
class HeartbeatAck(Message):
    CODE: ClassVar[int] = 13
    sequence: int


@dataclass(frozen=True)
class AssignTask(Message):
    CODE: ClassVar[int] = 14
    task_id: int
    type: str
    payload: bytes
    attempt: int
    no_reply: bool


@dataclass(frozen=True)
class TaskUpdate(Request):
    CODE: ClassVar[int] = 15
    request_id: int
    task_id: int
    kind: TaskUpdateKind | int = _enum(TaskUpdateKind)
    exit_code: int = 0
    result: bytes | None = None
    error: str | None = None


@dataclass(frozen=True)
class AssignTasks(Message):
    CODE: ClassVar[int] = 51
    tasks: list[AssignTask] = _rec(AssignTask, many=True)


@dataclass(frozen=True)
class TaskReport(_Record):
    task_id: int
    kind: TaskUpdateKind | int = _enum(TaskUpdateKind)
    exit_code: int = 0
    result: bytes | None = None
    error: str | None = None


@dataclass(frozen=True)
class TaskUpdates(Request):
    CODE: ClassVar[int] = 52
    request_id: int
    reports: list[TaskReport] = _rec(TaskReport, many=True)


@dataclass(frozen=True)
class ReportFailure(_Record, _Failure):
    index: int
    code: ErrorCode | int = _enum(ErrorCode)
    message: str


@dataclass(frozen=True)
class TaskUpdatesResult(Reply):
    CODE: ClassVar[int] = 53
    request_id: int
    failed: list[ReportFailure] = _rec(ReportFailure, many=True)


@dataclass(frozen=True)
class ControlTask(Message):
    CODE: ClassVar[int] = 16
    task_id: int
    action: ControlAction | int = _enum(ControlAction)


@dataclass(frozen=True)
class DrainNotice(Message):
    CODE: ClassVar[int] = 17
    stop: bool


# Actioners ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AddTasks(Request):
    CODE: ClassVar[int] = 20
    request_id: int
    tasks: list[TaskSpec] = _rec(TaskSpec, many=True)


@dataclass(frozen=True)
class TasksAdded(Reply):
    CODE: ClassVar[int] = 21
    request_id: int
    ids: list[int]


@dataclass(frozen=True)
class ControlTasks(Request):
    CODE: ClassVar[int] = 22
    request_id: int
    action: TaskAction | int = _enum(TaskAction)
    ids: list[int]
    all: bool


@dataclass(frozen=True)
class ControlResult(Reply):
    CODE: ClassVar[int] = 23
    request_id: int
    applied: list[int]
    failed: list[TaskFailure] = _rec(TaskFailure, many=True)


@dataclass(frozen=True)
class ListTasks(Request):
    CODE: ClassVar[int] = 24
    request_id: int
    state: int | None = None
    type: str | None = None
    tag: str | None = None
    worker: str | None = None
    after_id: int = 0
    limit: int = 1000


@dataclass(frozen=True)
class TaskList(Reply):
    CODE: ClassVar[int] = 25
    request_id: int
    tasks: list[TaskInfo] = _rec(TaskInfo, many=True)
    counts: dict[int, int]
    matched: int


@dataclass(frozen=True)
class ShowTask(Request):
    CODE: ClassVar[int] = 26
    request_id: int
    task_id: int


@dataclass(frozen=True)
class TaskDetail(Reply):
    CODE: ClassVar[int] = 27
    request_id: int
    task: TaskInfo = _rec(TaskInfo)


@dataclass(frozen=True)
class ListWorkers(Request):
    CODE: ClassVar[int] = 28
    request_id: int


@dataclass(frozen=True)
class WorkerList(Reply):
    CODE: ClassVar[int] = 29
    request_id: int
    workers: list[WorkerInfo] = _rec(WorkerInfo, many=True)


@dataclass(frozen=True)
class WorkerCommand(Request):
    CODE: ClassVar[int] = 30
    request_id: int
    worker: str
    action: WorkerAction | int = _enum(WorkerAction)


@dataclass(frozen=True)
class SetTagLimit(Request):
    CODE: ClassVar[int] = 31
    request_id: int
    tag: str
    limit: int | None


@dataclass(frozen=True)
class ListTagLimits(Request):
    CODE: ClassVar[int] = 32
    request_id: int


@dataclass(frozen=True)
class TagLimitList(Reply):
    CODE: ClassVar[int] = 33
    request_id: int
    limits: list[TagLimitInfo] = _rec(TagLimitInfo, many=True)


@dataclass(frozen=True)
class WaitTask(Request):
    CODE: ClassVar[int] = 34
    request_id: int
    task_id: int


@dataclass(frozen=True)
class TaskLayer(Reply):
    CODE: ClassVar[int] = 35
    request_id: int
    task_id: int
    depth: int


@dataclass(frozen=True)
class TaskOutcome(Reply):
    CODE: ClassVar[int] = 36
    request_id: int
    task_id: int
    exit_code: int
    result: bytes | None
    error: str | None
    layers: int


@dataclass(frozen=True)
class WatchTasks(Request):
    CODE: ClassVar[int] = 37
    request_id: int
    type: str | None = None
    tag: str | None = None


@dataclass(frozen=True)
class TaskEvent(Message):
    CODE: ClassVar[int] = 38
    task_id: int
    state: TaskState | int = _enum(TaskState)
    type: str
    worker: str | None
    exit_code: int | None
    at_ms: int
    reason: str | None


# RPC --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RpcRegister(Request):
    CODE: ClassVar[int] = 40
    request_id: int
    namespace: str
    identifier: str


@dataclass(frozen=True)
class RpcUnregister(Request):
    CODE: ClassVar[int] = 41
    request_id: int
    namespace: str
    identifier: str


@dataclass(frozen=True)
class RpcCall(Request):
    CODE: ClassVar[int] = 42
    request_id: int
    namespace: str
    identifier: str
    payload: bytes


@dataclass(frozen=True)
class RpcDelivery(Message):
    CODE: ClassVar[int] = 43
    call_id: int
    namespace: str
    identifier: str
    payload: bytes


@dataclass(frozen=True)
class RpcLayer(Reply):
    CODE: ClassVar[int] = 44
    request_id: int
    depth: int


@dataclass(frozen=True)
class RpcResult(Reply):
    CODE: ClassVar[int] = 45
    request_id: int
    ok: bool
    payload: bytes | None
    error: str | None
    layers: int


@dataclass(frozen=True)
class RpcResponse(Message):
    CODE: ClassVar[int] = 46
    call_id: int
    kind: RpcResponseKind | int = _enum(RpcResponseKind)
    payload: bytes | None = None
    error: str | None = None


# Broadcast --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Subscribe(Request):
    CODE: ClassVar[int] = 47
    request_id: int
    namespace: str
    subscription: str
    sender: Filter | None = _rec(Filter, default=None)
    subject: Filter | None = _rec(Filter, default=None)


@dataclass(frozen=True)
class Unsubscribe(Request):
    CODE: ClassVar[int] = 48
    request_id: int
    namespace: str
    subscription: str


@dataclass(frozen=True)
class Broadcast(Request):
    CODE: ClassVar[int] = 49
    request_id: int
    namespace: str
    body: bytes
    sender: str | None = None
    subject: str | None = None
    correlation_id: str | None = None


@dataclass(frozen=True)
class BroadcastDelivery(Message):
    CODE: ClassVar[int] = 50
    subscriptions: list[str]
    namespace: str
    body: bytes
    sender: str | None = None
    subject: str | None = None
    correlation_id: str | None = None


MESSAGE_TYPES: dict[int, type[Message]] = {
    cls.CODE: cls
    for cls in (
        Hello, Welcome, Error, Ok,
        RegisterWorker, WorkerRegistered, Heartbeat, HeartbeatAck, AssignTask, TaskUpdate, ControlTask, DrainNotice,
        AssignTasks, TaskUpdates, TaskUpdatesResult,
        AddTasks, TasksAdded, ControlTasks, ControlResult, ListTasks, TaskList, ShowTask, TaskDetail, ListWorkers,
        WorkerList, WorkerCommand, SetTagLimit, ListTagLimits, TagLimitList, WaitTask, TaskLayer, TaskOutcome,
        WatchTasks, TaskEvent,
        RpcRegister, RpcUnregister, RpcCall, RpcDelivery, RpcLayer, RpcResult, RpcResponse,
        Subscribe, Unsubscribe, Broadcast, BroadcastDelivery,
    )
}
__all__ += [cls.__name__ for cls in MESSAGE_TYPES.values()]
__all__ += ["HeldTask", "TaskReport", "ReportFailure", "TaskSpec", "TaskFailure", "TransitionInfo", "TaskInfo", "WorkerInfo", "TagLimitInfo", "Filter"]

# Requests whose final reply is the given type (besides Error). Layer notices are TaskLayer/RpcLayer.
REPLY_TYPES: dict[type[Request], type[Reply]] = {
    RegisterWorker: WorkerRegistered,
    TaskUpdate: Ok,
    TaskUpdates: TaskUpdatesResult,
    AddTasks: TasksAdded,
    ControlTasks: ControlResult,
    ListTasks: TaskList,
    ShowTask: TaskDetail,
    ListWorkers: WorkerList,
    WorkerCommand: Ok,
    SetTagLimit: Ok,
    ListTagLimits: TagLimitList,
    WaitTask: TaskOutcome,
    WatchTasks: Ok,
    RpcRegister: Ok,
    RpcUnregister: Ok,
    RpcCall: RpcResult,
    Subscribe: Ok,
    Unsubscribe: Ok,
    Broadcast: Ok,
}
LAYER_TYPES: tuple[type[Reply], ...] = (TaskLayer, RpcLayer)


# ---- codec ----------------------------------------------------------------------------------


def encode_body(message: Message) -> bytes:
    """The MessagePack body ``[code, [fields]]`` of ``message`` (no length prefix)."""
    return msgpack.packb([message.CODE, message.to_wire()], use_bin_type=True)  # type: ignore[no-any-return]


def decode_body(body: bytes) -> Message:
    """Decode one frame body. Raises :class:`ProtocolError` (``BadFrame``/``UnknownMessage``)."""
    if not body:
        raise ProtocolError("empty frame", code=ErrorCode.BAD_FRAME)
    try:
        raw = msgpack.unpackb(body, raw=False, strict_map_key=False, use_list=True)
    except Exception as exc:  # msgpack raises several unrelated exception types
        raise ProtocolError(f"frame body is not MessagePack: {exc}", code=ErrorCode.BAD_FRAME) from None
    if (not isinstance(raw, list) or len(raw) != 2 or not isinstance(raw[0], int)
            or isinstance(raw[0], bool) or not isinstance(raw[1], list)):
        raise ProtocolError("frame body is not a [code, fields] array", code=ErrorCode.BAD_FRAME)
    cls = MESSAGE_TYPES.get(raw[0])
    if cls is None:
        raise ProtocolError(f"unknown message type {raw[0]}", code=ErrorCode.UNKNOWN_MESSAGE)
    try:
        return cls.from_wire(raw[1])
    except ProtocolError:
        raise
    except Exception as exc:
        raise ProtocolError(f"{cls.__name__} does not decode: {exc}", code=ErrorCode.BAD_FRAME) from None


def encode_frame(message: Message) -> bytes:
    """A whole frame: 4-byte big-endian length, then the body."""
    body = encode_body(message)
    return _LENGTH.pack(len(body)) + body


def decode_frame(frame: bytes) -> Message:
    """Decode exactly one whole frame (length prefix included), as stored in golden vectors."""
    if len(frame) < HEADER_SIZE:
        raise ProtocolError("truncated frame header", code=ErrorCode.BAD_FRAME)
    (length,) = _LENGTH.unpack_from(frame)
    if length == 0 or len(frame) != HEADER_SIZE + length:
        raise ProtocolError("not exactly one frame", code=ErrorCode.BAD_FRAME)
    return decode_body(frame[HEADER_SIZE:])


class FrameDecoder:
    """Incremental frame splitter for a byte stream; checks the length before buffering a body."""

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        self._buffer += data
        out: list[Message] = []
        while len(self._buffer) >= HEADER_SIZE:
            (length,) = _LENGTH.unpack_from(self._buffer)
            if length == 0:
                raise ProtocolError("zero-length frame", code=ErrorCode.BAD_FRAME)
            if length > self.max_frame:
                raise ProtocolError(f"frame of {length} bytes exceeds {self.max_frame}", code=ErrorCode.FRAME_TOO_LARGE)
            if len(self._buffer) < HEADER_SIZE + length:
                break
            body = bytes(self._buffer[HEADER_SIZE:HEADER_SIZE + length])
            del self._buffer[:HEADER_SIZE + length]
            out.append(decode_body(body))
        return out
