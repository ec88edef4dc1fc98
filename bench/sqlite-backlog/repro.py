#!/usr/bin/python3
"""Reproduce tatzelwurm SqliteTaskStore write pattern with a large vs small backlog.

fill:  python3 repro.py fill DB N [--layout v2|narrow|log]
run:   python3 repro.py run DB [--layout ..] [--tasks 20000] [--batch 15] [--cache -2000]
                              [--autockpt 1000] [--nogrow] [--json out]
Schema: v1 then v2 migration of src/Tatzelwurm.Storage/SqliteSchema.cs (verbatim).
Statements: as SqliteTaskStore.cs (INSERT OR REPLACE full row, UPDATE 11 mutable columns,
INSERT OR REPLACE history rows; meta last_task_id per commit).
"""
import argparse, json, os, sqlite3, sys, time, collections

V1 = """
CREATE TABLE tasks (
    id INTEGER PRIMARY KEY, state INTEGER NOT NULL, type TEXT NOT NULL, priority INTEGER NOT NULL,
    tags TEXT NOT NULL, payload BLOB NOT NULL, policy INTEGER NOT NULL, no_reply INTEGER NOT NULL,
    exit_code INTEGER, result BLOB, error TEXT, worker_id TEXT, attempts INTEGER NOT NULL,
    layers INTEGER NOT NULL, pending_control INTEGER NOT NULL, kill_requested_at INTEGER, reason TEXT,
    created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, history TEXT NOT NULL);
CREATE TABLE tag_limits (tag TEXT PRIMARY KEY, max_running INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO meta (key, value) VALUES ('last_task_id', 0);
PRAGMA user_version = 1;
"""
V2 = """
CREATE TABLE task_history (task_id INTEGER NOT NULL, seq INTEGER NOT NULL, state INTEGER NOT NULL,
    at INTEGER NOT NULL, reason TEXT, PRIMARY KEY (task_id, seq)) WITHOUT ROWID;
INSERT INTO task_history (task_id, seq, state, at, reason)
    SELECT t.id, h.key, json_extract(h.value, '$[0]'), json_extract(h.value, '$[1]'), json_extract(h.value, '$[2]')
    FROM tasks AS t, json_each(t.history) AS h;
ALTER TABLE tasks DROP COLUMN history;
PRAGMA user_version = 2;
"""
# Fix candidate "narrow": mutable columns in their own narrow table (task_state), tasks keeps
# the immutable part. Fix candidate "log": v2 tasks, history as an append-only rowid log.
NARROW = """
CREATE TABLE task_state (id INTEGER PRIMARY KEY, state INTEGER NOT NULL, worker_id TEXT, exit_code INTEGER,
    result BLOB, error TEXT, attempts INTEGER NOT NULL, layers INTEGER NOT NULL, pending_control INTEGER NOT NULL,
    kill_requested_at INTEGER, reason TEXT, updated_at INTEGER NOT NULL);
"""
NARROWHIST = """
CREATE TABLE task_state (id INTEGER PRIMARY KEY, state INTEGER NOT NULL, worker_id TEXT, exit_code INTEGER,
    result BLOB, error TEXT, attempts INTEGER NOT NULL, layers INTEGER NOT NULL, pending_control INTEGER NOT NULL,
    kill_requested_at INTEGER, reason TEXT, updated_at INTEGER NOT NULL, history BLOB NOT NULL);
DROP TABLE task_history;
"""
INSERT_STATE_H = """INSERT OR REPLACE INTO task_state (id, state, worker_id, exit_code, result, error, attempts, layers,
  pending_control, kill_requested_at, reason, updated_at, history) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13)"""
UPDATE_STATE_H = """UPDATE task_state SET state = ?2, worker_id = ?3, exit_code = ?4, result = ?5, error = ?6, attempts = ?7,
  layers = ?8, pending_control = ?9, kill_requested_at = ?10, reason = ?11, updated_at = ?12, history = history || ?13 WHERE id = ?1"""
LOG = """
DROP TABLE task_history;
CREATE TABLE task_history (task_id INTEGER NOT NULL, seq INTEGER NOT NULL, state INTEGER NOT NULL,
    at INTEGER NOT NULL, reason TEXT);
"""

INSERT_TASK = """INSERT OR REPLACE INTO tasks (id, type, priority, tags, payload, policy, no_reply, created_at,
  state, worker_id, exit_code, result, error, attempts, layers, pending_control, kill_requested_at, reason, updated_at)
  VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19)"""
UPDATE_TASK = """UPDATE tasks SET state = ?2, worker_id = ?3, exit_code = ?4, result = ?5, error = ?6, attempts = ?7,
  layers = ?8, pending_control = ?9, kill_requested_at = ?10, reason = ?11, updated_at = ?12 WHERE id = ?1"""
INSERT_HIST = "INSERT OR REPLACE INTO task_history (task_id, seq, state, at, reason) VALUES (?1,?2,?3,?4,?5)"
INSERT_HIST_LOG = "INSERT INTO task_history (task_id, seq, state, at, reason) VALUES (?1,?2,?3,?4,?5)"
# narrow layout
INSERT_TASK_N = """INSERT OR REPLACE INTO tasks (id, type, priority, tags, payload, policy, no_reply, created_at,
  state, worker_id, exit_code, result, error, attempts, layers, pending_control, kill_requested_at, reason, updated_at)
  VALUES (?1,?2,?3,?4,?5,?6,?7,?8, 0,NULL,NULL,NULL,NULL,0,0,0,NULL,NULL,0)"""
INSERT_STATE_N = """INSERT OR REPLACE INTO task_state (id, state, worker_id, exit_code, result, error, attempts, layers,
  pending_control, kill_requested_at, reason, updated_at) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12)"""
UPDATE_STATE_N = UPDATE_TASK.replace("UPDATE tasks", "UPDATE task_state")
SET_LAST = "UPDATE meta SET value = ? WHERE key = 'last_task_id'"

PAYLOAD = bytes((i * 37) & 0xFF for i in range(200))
WORKER = "loadgen-worker-1-3fa9c2d1"
NOW = 1796000000000


def connect(path, cache=-2000, autockpt=1000):
    c = sqlite3.connect(path, isolation_level=None)
    assert c.execute("PRAGMA journal_mode = WAL").fetchone()[0] == "wal"
    c.execute("PRAGMA synchronous = FULL")
    c.execute("PRAGMA journal_size_limit = 67108864")
    c.execute(f"PRAGMA cache_size = {cache}")
    c.execute(f"PRAGMA wal_autocheckpoint = {autockpt}")
    return c


class Store:
    """Mimics SqliteTaskStore.Writer for one layout."""

    def __init__(self, c, layout, nogrow=False):
        self.c, self.layout, self.nogrow = c, layout, nogrow

    def insert(self, tid, now, submitted=False):
        if self.layout == "narrowhist":
            return self.insert_h(tid, now, submitted)
        wid = WORKER if (self.nogrow or submitted) else None  # nogrow: worker_id pre-set, same length
        imm = (tid, "bench", 0, "[]", PAYLOAD, 2, 1, now)
        mut = (2 if submitted else 1, wid, None, None, None, 1 if submitted else 0, 0, 0, None, None, now)
        if "narrow" in self.layout:
            self.c.execute(INSERT_TASK_N, imm)
            self.c.execute(INSERT_STATE_N, (tid,) + mut)
        else:
            self.c.execute(INSERT_TASK, imm + mut)
        h = INSERT_HIST_LOG if "log" in self.layout else INSERT_HIST
        self.c.execute(h, (tid, 0, 0, now, None))
        self.c.execute(h, (tid, 1, 1, now, None))
        if submitted:
            self.c.execute(h, (tid, 2, 2, now, None))

    def insert_h(self, tid, now, submitted):
        import struct
        hist = b"".join(struct.pack(">Bq", st, now) for st in ((0, 1, 2) if submitted else (0, 1)))
        self.c.execute(INSERT_TASK_N, (tid, "bench", 0, "[]", PAYLOAD, 2, 1, now))
        wid = WORKER if (self.nogrow or submitted) else None
        self.c.execute(INSERT_STATE_H, (tid, 2 if submitted else 1, wid, None, None, None, 1 if submitted else 0,
                                        0, 0, None, None, now, hist))

    def transition_h(self, tid, seq, state, now, update):
        import struct
        self.pend = getattr(self, "pend", b"") + struct.pack(">Bq", state, now)
        if not update:  # merged with the next transition (run+terminated): one UPDATE
            return
        exit_code = 0 if state == 5 else None
        cur = self.c.execute(UPDATE_STATE_H, (tid, state, WORKER, exit_code, None, None, 1, 0, 0, None, None, now, self.pend))
        assert cur.rowcount == 1
        self.pend = b""

    def transition(self, tid, seq, state, now, update=True):
        if self.layout == "narrowhist":
            return self.transition_h(tid, seq, state, now, update)
        exit_code = 0 if state == 5 else None
        u = UPDATE_STATE_N if "narrow" in self.layout else UPDATE_TASK
        if update:
            cur = self.c.execute(u, (tid, state, WORKER, exit_code, None, None, 1, 0, 0, None, None, now))
            assert cur.rowcount == 1
        h = INSERT_HIST_LOG if "log" in self.layout else INSERT_HIST
        self.c.execute(h, (tid, seq, state, now, None))


def create(path, layout, page_size=4096):
    c = sqlite3.connect(path, isolation_level=None)
    c.execute(f"PRAGMA page_size = {page_size}")
    c.execute("PRAGMA journal_mode = WAL")
    c.executescript("BEGIN IMMEDIATE;" + V1 + "COMMIT;")
    c.executescript("BEGIN IMMEDIATE;" + V2 + "COMMIT;")
    if "narrow" in layout and layout != "narrowhist":
        c.executescript(NARROW)
    if layout == "narrowhist":
        c.executescript(NARROWHIST)
    elif "log" in layout:
        c.executescript(LOG)
    c.close()


def fill(a):
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(a.db + suffix):
            os.remove(a.db + suffix)
    create(a.db, a.layout, a.page_size)
    c = connect(a.db)
    s = Store(c, a.layout, a.nogrow)
    t0 = time.time()
    tid = 0
    while tid < a.n:  # AddTasks batches of 1000 -> one commit each
        c.execute("BEGIN IMMEDIATE")
        for _ in range(min(1000, a.n - tid)):
            tid += 1
            s.insert(tid, NOW)
        c.execute(SET_LAST, (tid,))
        c.execute("COMMIT")
    print("fill", a.n, "rows", round(time.time() - t0, 1), "s", file=sys.stderr)
    print("ckpt", c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone(), file=sys.stderr)
    c.close()


def proc_io():
    d = {}
    with open("/proc/self/io") as f:
        for line in f:
            k, v = line.split(":")
            d[k] = int(v)
    return d


def run(a):
    c = connect(a.db, a.cache, a.autockpt)
    s = Store(c, a.layout, a.nogrow)
    last = c.execute("SELECT value FROM meta WHERE key='last_task_id'").fetchone()[0]
    pc0 = c.execute("PRAGMA page_count").fetchone()[0]
    queue = collections.deque(range(a.skip + 1, last + 1))  # FIFO backlog, oldest first (rows <= skip: warm-up, not queued)
    submitted, running = [], []
    next_id, done, commits, coalesced = last, 0, 0, 0
    B = a.batch
    D = 2 * B if a.drain else B  # dispatch capacity per commit
    io0, cpu0, w0 = proc_io(), time.process_time(), time.time()
    while done < a.tasks:
        now = NOW + 1000 + commits
        c.execute("BEGIN IMMEDIATE")
        new_ids = list(range(next_id + 1, next_id + B + 1))
        next_id += B
        queue.extend(new_ids)
        disp = [queue.popleft() for _ in range(min(D, len(queue)))]
        fresh = set(new_ids)
        for tid in new_ids:  # new tasks; if dispatched in the same group commit, one merged image
            if a.coalesce and tid in fresh and tid in disp:
                s.insert(tid, now, submitted=True)
                coalesced += 1
            else:
                s.insert(tid, now)
        if a.fastrun:  # run + terminated reported together: one UPDATE, two history rows
            for tid in submitted:
                s.transition(tid, 3, 3, now, update=False)
                s.transition(tid, 4, 5, now)
            done += len(submitted)
        else:
            for tid in running:
                s.transition(tid, 4, 5, now)
            done += len(running)
            for tid in submitted:
                s.transition(tid, 3, 3, now)
            running = submitted
        for tid in disp:  # ready -> submit (worker_id set)
            if not (a.coalesce and tid in fresh):
                s.transition(tid, 2, 2, now)
        submitted = disp
        c.execute(SET_LAST, (next_id,))
        c.execute("COMMIT")
        commits += 1
    cpu, wall, io1 = time.process_time() - cpu0, time.time() - w0, proc_io()
    pc1 = c.execute("PRAGMA page_count").fetchone()[0]
    walsize = os.path.getsize(a.db + "-wal")
    res = dict(page_size=c.execute("PRAGMA page_size").fetchone()[0], db=a.db, layout=a.layout, nogrow=a.nogrow, cache=a.cache, autockpt=a.autockpt, batch=B,
               skip=a.skip, commits=commits, done=done, coalesced=coalesced, drain=a.drain, fastrun=a.fastrun, wall_s=round(wall, 2), cpu_s=round(cpu, 2),
               wchar_MiB=round((io1["wchar"] - io0["wchar"]) / 2**20, 1),
               write_bytes_MiB=round((io1["write_bytes"] - io0["write_bytes"]) / 2**20, 1),
               rchar_MiB=round((io1["rchar"] - io0["rchar"]) / 2**20, 1),
               syscw=io1["syscw"] - io0["syscw"], syscr=io1["syscr"] - io0["syscr"],
               page_count_before=pc0, page_count_after=pc1, page_growth=pc1 - pc0, wal_bytes_end=walsize)
    if a.autockpt == 0:  # whole run in the WAL: frames = pages written
        res["wal_frames"] = (walsize - 32) // (res["page_size"] + 24)
    if a.autockpt == 0:  # keep the WAL for walstat.py (close would checkpoint and delete it)
        import shutil
        shutil.copyfile(a.db + "-wal", a.db + ".walcopy")
    c.close()
    print(json.dumps(res))
    if a.json:
        with open(a.json, "a") as f:
            f.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("cmd", choices=["fill", "run"])
    p.add_argument("db")
    p.add_argument("n", nargs="?", type=int, default=0)
    p.add_argument("--layout", default="v2", choices=["v2", "narrow", "log", "narrowlog", "narrowhist"])
    p.add_argument("--tasks", type=int, default=20000)
    p.add_argument("--batch", type=int, default=15)
    p.add_argument("--cache", type=int, default=-2000)
    p.add_argument("--autockpt", type=int, default=1000)
    p.add_argument("--nogrow", action="store_true")
    p.add_argument("--page-size", type=int, default=4096, help="fill only: PRAGMA page_size of the new file")
    p.add_argument("--skip", type=int, default=0, help="first SKIP rows are not queued (stand-in for the 50,000 warm-up tasks)")
    p.add_argument("--coalesce", action="store_true", help="new task dispatched in its own commit -> one merged INSERT")
    p.add_argument("--drain", action="store_true", help="dispatch up to 2*batch per commit (backlog drains)")
    p.add_argument("--fastrun", action="store_true", help="run+terminated in the same commit")
    p.add_argument("--json")
    a = p.parse_args()
    fill(a) if a.cmd == "fill" else run(a)
