"""A small in-memory stand-in for the coordinator, written from docs/protocol.md.

It exists for developing and debugging the client while the real coordinator is not available,
and is selected in the test-suite only with ``TATZELWURM_TEST_COORDINATOR=fake``; the suite's
default is the real coordinator. Same command line as the real one::

    fake_coordinator.py --listen 127.0.0.1:0 --data DIR [--heartbeat 500ms] [--lease 3s] [--grace 3s]

State is saved to ``DIR/fake-state.pickle`` after every change, so a restart keeps tasks (running
ones wait ``grace`` for their worker to reclaim them).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import pickle
import re
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tatzelwurm import protocol as p  # noqa: E402

S = p.TaskState


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Task:
    id: int
    payload: bytes
    type: str
    priority: int
    tags: list[str]
    policy: int
    no_reply: bool
    state: int
    worker: str | None = None
    attempts: int = 0
    exit_code: int | None = None
    result: bytes | None = None
    error: str | None = None
    layers: int = 0
    reason: str | None = None
    created: int = field(default_factory=now_ms)
    updated: int = field(default_factory=now_ms)
    history: list[tuple[int, int, str | None]] = field(default_factory=list)
    rejected_by: set[str] = field(default_factory=set)

    def info(self, with_history: bool = False) -> p.TaskInfo:
        return p.TaskInfo(self.id, self.state, self.type, self.priority, list(self.tags), self.policy, self.worker,
                          self.attempts, self.exit_code, self.created, self.updated, self.reason, len(self.payload),
                          [p.TransitionInfo(s, t, r) for s, t, r in self.history] if with_history else [],
                          None, self.result is not None, self.no_reply)


@dataclass
class Worker:
    worker_id: str
    name: str
    types: list[str]
    slots: int
    session: Session | None
    draining: bool = False
    last_seen: int = field(default_factory=now_ms)
    connected_at: int = field(default_factory=now_ms)

    def load(self, tasks: dict[int, Task]) -> int:
        return sum(1 for t in tasks.values() if t.worker == self.worker_id and t.state in (S.SUBMIT, S.RUN, S.PAUSE))


class Session:
    def __init__(self, coord: Coordinator, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.coord = coord
        self.reader = reader
        self.writer = writer
        self.role = ""
        self.worker_id: str | None = None
        self.watch: tuple[str | None, str | None] | None = None

    def send(self, msg: p.Message) -> None:
        if not self.writer.is_closing():
            self.writer.write(p.encode_frame(msg))


class Coordinator:
    def __init__(self, data: Path, heartbeat_ms: int, lease_ms: int, grace_ms: int) -> None:
        self.data = data
        self.heartbeat_ms = heartbeat_ms
        self.lease_ms = lease_ms
        self.grace_ms = grace_ms
        self.tasks: dict[int, Task] = {}
        self.next_id = 1
        self.workers: dict[str, Worker] = {}
        self.rpc: dict[tuple[str, str], Session] = {}
        self.calls: dict[int, list[Any]] = {}  # call id -> [caller, request id, layers, target]
        self.call_ids = itertools.count(1)
        self.subs: dict[tuple[str, str], tuple[Session, p.Filter | None, p.Filter | None]] = {}
        self.waiters: dict[int, list[tuple[Session, int]]] = {}
        self.sessions: set[Session] = set()
        token_file = data / "token"
        if not token_file.exists():
            token_file.write_text(secrets.token_hex(16))
        self.token = token_file.read_text().strip()
        self.load()

    # persistence (pickle; good enough for a test double)
    def load(self) -> None:
        f = self.data / "fake-state.pickle"
        if f.exists():
            state = pickle.loads(f.read_bytes())
            self.tasks, self.next_id = state["tasks"], state["next_id"]
            for t in self.tasks.values():
                if t.state == S.SUBMIT:
                    self.transition(t, S.READY, "coordinator restarted", save=False)
                    t.worker = None
            orphans = {t.worker for t in self.tasks.values() if t.state in (S.RUN, S.PAUSE) and t.worker}
            for wid in orphans:
                self.workers[wid] = Worker(wid, wid, [], 0, None)
                asyncio.get_running_loop().call_later(self.grace_ms / 1000, self.expire, wid)

    def save(self) -> None:
        f = self.data / "fake-state.pickle"
        tmp = f.with_suffix(".tmp")
        tmp.write_bytes(pickle.dumps({"tasks": self.tasks, "next_id": self.next_id}))
        os.replace(tmp, f)

    def transition(self, t: Task, state: int, reason: str | None = None, save: bool = True) -> None:
        t.state = state
        t.updated = now_ms()
        t.history.append((state, t.updated, reason))
        if reason:
            t.reason = reason
        for s in list(self.sessions):
            if s.watch is not None and (s.watch[0] is None or s.watch[0] == t.type) and \
                    (s.watch[1] is None or s.watch[1] in t.tags):
                s.send(p.TaskEvent(t.id, state, t.type, t.worker, t.exit_code, t.updated, reason))
        if save:
            self.save()

    def terminate(self, t: Task, exit_code: int, result: bytes | None, error: str | None, reason: str | None) -> None:
        t.exit_code = exit_code
        if not t.no_reply:
            t.result, t.error = result, error
        self.transition(t, S.TERMINATED, reason)
        for sess, rid in self.waiters.pop(t.id, []):
            sess.send(p.TaskOutcome(rid, t.id, exit_code, t.result, t.error, t.layers))

    # assignment
    def assign(self) -> None:
        ready = sorted((t for t in self.tasks.values() if t.state == S.READY), key=lambda t: (-t.priority, t.id))
        for t in ready:
            candidates = [w for w in self.workers.values() if w.session is not None and not w.draining
                          and t.type in w.types and w.load(self.tasks) < w.slots]
            if not candidates:
                continue
            fresh = [w for w in candidates if w.worker_id not in t.rejected_by] or candidates
            w = min(fresh, key=lambda w: w.load(self.tasks))
            t.worker = w.worker_id
            self.transition(t, S.SUBMIT)
            assert w.session is not None
            w.session.send(p.AssignTask(t.id, t.type, t.payload, t.attempts + 1, t.no_reply))

    def expire(self, worker_id: str) -> None:
        w = self.workers.get(worker_id)
        if w is None or w.session is not None:
            return
        del self.workers[worker_id]
        for t in self.tasks.values():
            if t.worker == worker_id and t.state in (S.SUBMIT, S.RUN, S.PAUSE):
                if t.state != S.SUBMIT:
                    t.attempts += 1
                if t.state == S.SUBMIT or t.policy != p.DeliveryPolicy.AT_MOST_ONCE:
                    t.worker = None
                    self.transition(t, S.READY, "worker lost")
                else:
                    t.worker = None
                    self.transition(t, S.PAUSE, "worker lost (at-most-once)")
        self.assign()

    # connection handling
    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sess = Session(self, reader, writer)
        try:
            first = await self.read(reader)
            if not isinstance(first, p.Hello):
                sess.send(p.Error(0, p.ErrorCode.HANDSHAKE_REQUIRED, "first frame must be Hello"))
                return
            if first.version != 1:
                sess.send(p.Error(0, p.ErrorCode.UNSUPPORTED_VERSION, f"version {first.version}"))
                return
            if first.role not in ("worker", "actioner"):
                sess.send(p.Error(0, p.ErrorCode.INVALID_REQUEST, "bad role"))
                return
            if first.token != self.token:
                sess.send(p.Error(0, p.ErrorCode.AUTH_FAILED, "wrong token"))
                return
            sess.role = first.role
            self.sessions.add(sess)
            sess.send(p.Welcome(1, secrets.token_hex(4), self.heartbeat_ms, self.lease_ms, p.DEFAULT_MAX_FRAME))
            while True:
                msg = await self.read(reader)
                try:
                    self.dispatch(sess, msg)
                except p.TatzelwurmError as exc:
                    sess.send(p.Error(getattr(msg, "request_id", 0) or 0, int(exc.code or 17), exc.message))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except p.ProtocolError as exc:
            sess.send(p.Error(0, int(exc.code or 1), exc.message))
        finally:
            self.drop_session(sess)
            writer.close()

    async def read(self, reader: asyncio.StreamReader) -> p.Message:
        header = await reader.readexactly(4)
        n = int.from_bytes(header, "big")
        if n == 0 or n > p.DEFAULT_MAX_FRAME:
            raise p.ProtocolError("bad length", code=p.ErrorCode.FRAME_TOO_LARGE if n else p.ErrorCode.BAD_FRAME)
        return p.decode_body(await reader.readexactly(n))

    def drop_session(self, sess: Session) -> None:
        self.sessions.discard(sess)
        for key in [k for k, s in self.rpc.items() if s is sess]:
            del self.rpc[key]
        for key in [k for k, v in self.subs.items() if v[0] is sess]:
            del self.subs[key]
        for cid, (caller, rid, _layers, target) in list(self.calls.items()):
            if caller is sess:
                del self.calls[cid]
            elif target is sess:
                caller.send(p.Error(rid, p.ErrorCode.DELIVERY_FAILED, "recipient disconnected"))
                del self.calls[cid]
        for lst in self.waiters.values():
            lst[:] = [(s, r) for s, r in lst if s is not sess]
        if sess.worker_id is not None:
            w = self.workers.get(sess.worker_id)
            if w is not None and w.session is sess:
                w.session = None
                for t in self.tasks.values():
                    if t.worker == w.worker_id and t.state == S.SUBMIT:
                        t.worker = None
                        self.transition(t, S.READY, "worker disconnected")
                asyncio.get_running_loop().call_later(self.grace_ms / 1000, self.expire, w.worker_id)
                self.assign()

    def task(self, task_id: int) -> Task:
        t = self.tasks.get(task_id)
        if t is None:
            raise p.UnknownTask(f"no task {task_id}")
        return t

    def dispatch(self, sess: Session, msg: p.Message) -> None:  # noqa: C901
        if sess.worker_id is not None and sess.worker_id in self.workers:
            self.workers[sess.worker_id].last_seen = now_ms()
        if isinstance(msg, (p.RegisterWorker, p.Heartbeat, p.TaskUpdate)) and sess.role != "worker":
            raise p.NotAllowedForRole("not a worker")
        if isinstance(msg, p.Heartbeat):
            sess.send(p.HeartbeatAck(msg.sequence))
        elif isinstance(msg, p.RegisterWorker):
            w = self.workers.get(msg.worker_id)
            if w is None:
                w = self.workers[msg.worker_id] = Worker(msg.worker_id, msg.name, list(msg.types), msg.slots, sess)
            if w.session is not None and w.session is not sess:
                w.session.writer.close()
            w.session, w.name, w.types, w.slots = sess, msg.name, list(msg.types), msg.slots
            sess.worker_id = msg.worker_id
            drop = []
            held_ids = {h.task_id for h in msg.held}
            for h in msg.held:
                t = self.tasks.get(h.task_id)
                if t is None or t.worker != msg.worker_id or t.state not in (S.SUBMIT, S.RUN, S.PAUSE):
                    drop.append(h.task_id)
            # tasks the coordinator thinks this worker runs but it did not declare
            for t in self.tasks.values():
                if t.worker == msg.worker_id and t.state in (S.RUN, S.PAUSE, S.SUBMIT) and t.id not in held_ids:
                    t.worker = None
                    self.transition(t, S.READY, "not reclaimed")
            sess.send(p.WorkerRegistered(msg.request_id, drop))
            self.assign()
        elif isinstance(msg, p.TaskUpdate):
            t = self.task(msg.task_id)
            if t.worker != sess.worker_id:
                raise p.IllegalTransition(f"task {t.id} is not yours")
            k = msg.kind
            if k == p.TaskUpdateKind.ACCEPTED:
                if t.state != S.SUBMIT:
                    raise p.IllegalTransition(f"task {t.id} is {S(t.state).label}: cannot accept")
                self.transition(t, S.RUN)
            elif k == p.TaskUpdateKind.REJECTED:
                if t.state != S.SUBMIT:
                    raise p.IllegalTransition(f"task {t.id} is {S(t.state).label}: cannot reject")
                t.rejected_by.add(t.worker or "")
                t.worker = None
                self.transition(t, S.READY, "rejected")
            elif k == p.TaskUpdateKind.PAUSED:
                if t.state != S.RUN:
                    raise p.IllegalTransition("cannot pause")
                self.transition(t, S.PAUSE, "paused")
            elif k == p.TaskUpdateKind.RESUMED:
                if t.state != S.PAUSE:
                    raise p.IllegalTransition("cannot resume")
                self.transition(t, S.RUN, "resumed")
            elif k == p.TaskUpdateKind.PENDING:
                if t.state not in (S.RUN, S.PAUSE):
                    raise p.IllegalTransition("not running")
                t.layers += 1
                for s, rid in self.waiters.get(t.id, []):
                    s.send(p.TaskLayer(rid, t.id, t.layers))
                self.save()
            elif k == p.TaskUpdateKind.FINISHED:
                if t.state not in (S.RUN, S.PAUSE, S.SUBMIT):
                    raise p.IllegalTransition("not running")
                self.terminate(t, msg.exit_code, msg.result, msg.error, None)
            sess.send(p.Ok(msg.request_id))
            self.assign()
        elif isinstance(msg, p.AddTasks):
            ids = []
            for spec in msg.tasks:
                t = Task(self.next_id, spec.payload, spec.type, spec.priority, list(spec.tags), int(spec.policy),
                         spec.no_reply, S.CREATED)
                self.next_id += 1
                self.tasks[t.id] = t
                self.transition(t, S.READY if spec.ready else S.CREATED, save=False)
                ids.append(t.id)
            self.save()
            sess.send(p.TasksAdded(msg.request_id, ids))
            self.assign()
        elif isinstance(msg, p.ControlTasks):
            applied, failed = [], []
            ids = list(self.tasks) if msg.all else msg.ids
            for tid in ids:
                t = self.tasks.get(tid)
                if t is None:
                    failed.append(p.TaskFailure(tid, p.ErrorCode.UNKNOWN_TASK, f"no task {tid}"))
                    continue
                ok = self.control(t, msg.action, msg.all)
                if ok is True:
                    applied.append(tid)
                elif ok is not None and not msg.all:
                    failed.append(p.TaskFailure(tid, p.ErrorCode.ILLEGAL_TRANSITION, ok))
            sess.send(p.ControlResult(msg.request_id, applied, failed))
            self.assign()
        elif isinstance(msg, p.ListTasks):
            sel = [t for t in sorted(self.tasks.values(), key=lambda t: t.id)
                   if (msg.state is None or t.state == msg.state) and (msg.type is None or t.type == msg.type)
                   and (msg.tag is None or msg.tag in t.tags) and (msg.worker is None or t.worker == msg.worker)]
            counts: dict[int, int] = {}
            for t in self.tasks.values():
                counts[t.state] = counts.get(t.state, 0) + 1
            page = [t.info() for t in sel if t.id > msg.after_id][:msg.limit]
            sess.send(p.TaskList(msg.request_id, page, counts, len(sel)))
        elif isinstance(msg, p.ShowTask):
            sess.send(p.TaskDetail(msg.request_id, self.task(msg.task_id).info(True)))
        elif isinstance(msg, p.ListWorkers):
            sess.send(p.WorkerList(msg.request_id, [
                p.WorkerInfo(w.worker_id, w.name, w.types, w.slots, w.load(self.tasks),
                             "connected" if w.session else "suspect", w.last_seen, w.connected_at, w.draining)
                for w in self.workers.values()]))
        elif isinstance(msg, p.WorkerCommand):
            w = self.workers.get(msg.worker) or next((x for x in self.workers.values() if x.name == msg.worker), None)
            if w is None:
                raise p.UnknownWorker(f"no worker {msg.worker}")
            w.draining = msg.action != p.WorkerAction.UNDRAIN
            if w.session is not None and msg.action != p.WorkerAction.UNDRAIN:
                w.session.send(p.DrainNotice(msg.action == p.WorkerAction.STOP))
            sess.send(p.Ok(msg.request_id))
            self.assign()
        elif isinstance(msg, (p.SetTagLimit,)):
            sess.send(p.Ok(msg.request_id))
        elif isinstance(msg, p.ListTagLimits):
            sess.send(p.TagLimitList(msg.request_id, []))
        elif isinstance(msg, p.WaitTask):
            t = self.task(msg.task_id)
            if t.state == S.TERMINATED:
                sess.send(p.TaskOutcome(msg.request_id, t.id, t.exit_code or 0, t.result, t.error, t.layers))
            else:
                for d in range(1, t.layers + 1):
                    sess.send(p.TaskLayer(msg.request_id, t.id, d))
                self.waiters.setdefault(t.id, []).append((sess, msg.request_id))
        elif isinstance(msg, p.WatchTasks):
            sess.watch = (msg.type, msg.tag)
            sess.send(p.Ok(msg.request_id))
        elif isinstance(msg, p.RpcRegister):
            key = (msg.namespace, msg.identifier)
            if key in self.rpc:
                raise p.DuplicateIdentifier(f"{msg.identifier} already registered")
            self.rpc[key] = sess
            sess.send(p.Ok(msg.request_id))
        elif isinstance(msg, p.RpcUnregister):
            key = (msg.namespace, msg.identifier)
            if self.rpc.get(key) is not sess:
                raise p.UnknownIdentifier(f"{msg.identifier} not registered by you")
            del self.rpc[key]
            sess.send(p.Ok(msg.request_id))
        elif isinstance(msg, p.RpcCall):
            target = self.rpc.get((msg.namespace, msg.identifier))
            if target is None:
                raise p.Unroutable(f"nobody holds {msg.identifier}")
            cid = next(self.call_ids)
            self.calls[cid] = [sess, msg.request_id, 0, target]
            target.send(p.RpcDelivery(cid, msg.namespace, msg.identifier, msg.payload))
        elif isinstance(msg, p.RpcResponse):
            entry = self.calls.get(msg.call_id)
            if entry is None:
                return
            caller, rid, layers, _target = entry
            if msg.kind == p.RpcResponseKind.PENDING:
                layers += 1
                entry[2] = layers
                caller.send(p.RpcLayer(rid, layers))
            else:
                del self.calls[msg.call_id]
                ok = msg.kind == p.RpcResponseKind.VALUE
                caller.send(p.RpcResult(rid, ok, msg.payload if ok else None, msg.error, layers))
        elif isinstance(msg, p.Subscribe):
            key = (msg.namespace, msg.subscription)
            if key in self.subs:
                raise p.DuplicateIdentifier("subscription exists")
            for f in (msg.sender, msg.subject):
                if f is not None and f.kind == p.FilterKind.REGEX:
                    try:
                        re.compile(f.pattern)
                    except re.error as exc:
                        raise p.InvalidRequest(f"bad regex: {exc}") from None
            self.subs[key] = (sess, msg.sender, msg.subject)
            sess.send(p.Ok(msg.request_id))
        elif isinstance(msg, p.Unsubscribe):
            key = (msg.namespace, msg.subscription)
            if key not in self.subs or self.subs[key][0] is not sess:
                raise p.UnknownIdentifier("no such subscription")
            del self.subs[key]
            sess.send(p.Ok(msg.request_id))
        elif isinstance(msg, p.Broadcast):
            per_session: dict[Session, list[str]] = {}
            for (ns, name), (s, fs, fj) in self.subs.items():
                if ns == msg.namespace and match(fs, msg.sender) and match(fj, msg.subject):
                    per_session.setdefault(s, []).append(name)
            for s, names in per_session.items():
                s.send(p.BroadcastDelivery(names, msg.namespace, msg.body, msg.sender, msg.subject,
                                           msg.correlation_id))
            sess.send(p.Ok(msg.request_id))
        else:
            raise p.UnknownMessage(f"unexpected {type(msg).__name__}")

    def control(self, t: Task, action: int, all_: bool) -> bool | str | None:
        st = t.state
        if action == p.TaskAction.PLAY:
            if st == S.CREATED or (st == S.PAUSE and t.worker is None):
                self.transition(t, S.READY, "played")
                return True
            if st == S.PAUSE and t.worker is not None:
                self.send_control(t, p.ControlAction.PLAY)
                return True
        elif action == p.TaskAction.PAUSE:
            if st in (S.CREATED, S.READY):
                self.transition(t, S.PAUSE, "paused")
                return True
            if st == S.RUN and not all_:
                self.send_control(t, p.ControlAction.PAUSE)
                return True
        elif action == p.TaskAction.KILL and not all_:
            if st in (S.CREATED, S.READY) or (st == S.PAUSE and t.worker is None):
                self.terminate(t, -1, None, None, "killed by actioner")
                return True
            if st in (S.RUN, S.PAUSE, S.SUBMIT):
                self.send_control(t, p.ControlAction.KILL)
                return True
        if all_:
            return None
        return f"task {t.id} is {S(st).label}: cannot {p.TaskAction(action).name.lower()}"

    def send_control(self, t: Task, action: p.ControlAction) -> None:
        w = self.workers.get(t.worker or "")
        if w is not None and w.session is not None:
            w.session.send(p.ControlTask(t.id, action))


def match(f: p.Filter | None, value: str | None) -> bool:
    if f is None or value is None:
        return True
    if f.kind == p.FilterKind.GLOB:
        return re.match(".*".join(re.escape(part) for part in f.pattern.split("*")), value) is not None
    return re.match(f.pattern, value) is not None


def duration_ms(text: str) -> int:
    m = re.fullmatch(r"(\d+)(ms|s|m)", text)
    if m is None:
        raise SystemExit(f"bad duration {text!r}")
    return int(m.group(1)) * {"ms": 1, "s": 1000, "m": 60000}[m.group(2)]


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", default="127.0.0.1:0")
    ap.add_argument("--data", required=True)
    ap.add_argument("--heartbeat", default="500ms")
    ap.add_argument("--lease", default="3s")
    ap.add_argument("--grace", default="3s")
    args, _ = ap.parse_known_args()
    data = Path(args.data)
    data.mkdir(parents=True, exist_ok=True)
    coord = Coordinator(data, duration_ms(args.heartbeat), duration_ms(args.lease), duration_ms(args.grace))
    host, port = args.listen.rsplit(":", 1)
    server = await asyncio.start_server(coord.handle, host, int(port))
    real_port = server.sockets[0].getsockname()[1]
    tmp = data / "address.tmp"
    tmp.write_text(f"{host}:{real_port}")
    os.replace(tmp, data / "address")
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
