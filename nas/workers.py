"""Several search workers on one study, with exactly the requested number of finished trials.

Each worker runs its sampler on an in-memory mirror of the study (fast asks and tells) and
persists finished trials to the shared storage a generation at a time (one sync per generation
on a journal file). Slots are reserved under a file lock, so N workers, or N separate processes, finish exactly the
requested number of trials; a killed worker loses only its unpersisted generation, and its
reservation is dropped once its process is gone.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import optuna

from nas.interrupts import raise_if_interrupted

COMPLETE = (optuna.trial.TrialState.COMPLETE,)
Evaluate = Callable[[list[dict[str, int]]], tuple[list[list[float]], list[dict[str, float]]]]


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock held for the duration of the block (released if the process dies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def sole_lock(path: Path, busy: str) -> Iterator[None]:
    """An exclusive advisory lock for the block, or StageError(`busy`, naming the holder) at once when
    another process holds it: for work that two processes must not do side by side, nor queue for."""
    from nas.errors import StageError

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip()
            raise StageError(busy + (f" (process {holder})" if holder else "")) from None
        try:
            f.seek(0)
            f.truncate()
            f.write(owner_name(me()))
            f.flush()
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def lock_holder(path: Path) -> str | None:
    """Who holds `sole_lock(path)` now (its owner name, "" if unnamed), or None when nobody does."""
    try:
        f = open(path)
    except OSError:  # no lock file: the stage never ran here
        return None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return f.read().strip()
        fcntl.flock(f, fcntl.LOCK_UN)
    return None


def me() -> str:
    """This process as "host:pid:start" (its start time in clock ticks after boot; "host:pid" where
    there is no /proc), the way owners are named: a pid alone is reused, by any process, once it is free
    (a container's restarted search is pid 1 again), and an entry of a killed worker would stay "alive"."""
    pid = os.getpid()  # the key: a forked child is another owner
    if pid not in _ME:
        started = (_stat_fields(pid) or {}).get(START_FIELD)
        _ME[pid] = f"{socket.gethostname()}:{pid}" + (f":{started}" if started else "")
    return _ME[pid]


_ME: dict[int, str] = {}  # me() by pid: read from /proc once, not for every entry compared with it


def owner_host(owner: str) -> str:
    """The host an owner named by `me` runs on."""
    return owner.split(":")[0]


def owner_name(owner: str) -> str:
    """An owner as a person finds it in `ps`: "host:pid"."""
    return ":".join(owner.split(":")[:2])


STATE_FIELD, START_FIELD = 0, 19  # in /proc/PID/stat after the command's closing ")": fields 3 and 22


def _stat_fields(pid: int) -> dict[int, str] | None:
    """The fields of /proc/PID/stat after the command, by index; None without /proc (not Linux) or a process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return dict(enumerate(stat[stat.rfind(")") + 2:].split()))


# Seconds a worker on another machine holds a batch reservation (its pid cannot be checked from here):
# a batch of predictor-evaluated trials takes well under a second; a slower one that outlives its
# lease only gets fewer of its trials kept (run_worker re-counts before it persists).
REMOTE_LEASE_S = 120.0


def _alive(owner: str, since: float | None = None, lease: float | None = None) -> bool:
    host, _, rest = owner.partition(":")
    if host != socket.gethostname():
        # Another machine's worker: trusted, or, for a leased hold, trusted until its lease runs out.
        return lease is None or (since is not None and time.time() - since < lease)
    pid, _, started = rest.partition(":")  # no start time: an entry of a version that wrote none
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError):  # ValueError: a damaged entry, held by no one
        return False
    except PermissionError:
        pass
    fields = _stat_fields(int(pid))
    if fields is None:  # no /proc (not Linux): kill(pid, 0) is trusted
        return True
    if started and fields.get(START_FIELD) not in (None, started):
        return False  # the pid now names another process
    # A killed worker whose parent (`nas search --workers N`) has not reaped it yet still answers
    # kill(pid, 0); its reservation must lapse all the same, or the others wait for it for ever.
    return fields.get(STATE_FIELD) not in ("Z", "X")


def owner_alive(owner: str) -> bool:
    """Whether the process named "host:pid" still runs (one on another machine is taken to)."""
    return _alive(owner)


SINCE = "__since__"  # in a leased holders' file: {key: {owner: when it wrote its entry}}; values stay plain


class LiveHolders:
    """Per-key values (JSON) held by live worker processes, in a file read and written under a lock.

    An entry whose process is gone no longer counts, so a killed worker's hold lapses by itself; with
    a `lease` (s), so does one a process on another machine wrote that long ago (or that this process
    first saw that long ago, for an entry of a version that wrote no time)."""

    def __init__(self, path: Path, key: str, lease: float | None = None):
        self.path, self.key, self.lease = path, key, lease
        self._first_seen: dict[str, float] = {}

    def _load(self) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, float]]]:
        """(live entries by key, when each was written by key)."""
        try:
            data = json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError, RecursionError):
            data = {}
        if not isinstance(data, dict):  # damaged: as if no one held anything (live holders write it again)
            data = {}
        stamps = data.get(SINCE) if isinstance(data.get(SINCE), dict) else {}
        held, since = {}, {}
        for k, entries in data.items():
            if k == SINCE or not isinstance(entries, dict):
                continue
            times = stamps.get(k) if isinstance(stamps.get(k), dict) else {}
            times = {o: float(t) for o, t in times.items() if isinstance(t, int | float) and not isinstance(t, bool)}
            live = {o: n for o, n in entries.items() if _alive(o, self._when(o, times), self.lease)}
            held[k], since[k] = live, {o: t for o, t in times.items() if o in live}
        return held, since

    def _when(self, owner: str, times: dict[str, float]) -> float | None:
        if self.lease is None:
            return None
        return times.get(owner) or self._first_seen.setdefault(owner, time.time())

    def under_other_keys(self) -> dict[str, list[str]]:
        """Live workers other than this one holding values under keys other than this one: key -> owners."""
        found = {k: sorted(o for o in held if o != me()) for k, held in self._load()[0].items() if k != self.key}
        return {k: owners for k, owners in found.items() if owners}

    def others(self) -> dict[str, Any]:
        """What live workers other than this one hold under the key."""
        return {o: n for o, n in self._load()[0].get(self.key, {}).items() if o != me()}

    def set(self, value: Any) -> None:
        """Record this worker's value under the key (None drops it)."""
        data, since = self._load()
        held, times = data.setdefault(self.key, {}), since.setdefault(self.key, {})
        if value is None:
            held.pop(me(), None)
            times.pop(me(), None)
        else:
            held[me()] = value
            times[me()] = time.time()
        if self.lease is not None:
            data[SINCE] = {k: t for k, t in since.items() if t}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.path)


def slot_holders(lock_path: Path, key: str) -> LiveHolders:
    """The worker slots taken under the lock file `lock_path` (what `worker_slot` claims from), as `key` sees them."""
    return LiveHolders(lock_path.with_name("workers.json"), key)


@contextlib.contextmanager
def worker_slot(lock_path: Path, key: str) -> Iterator[int]:
    """The smallest worker index no other live process holds under `key`, held for the block.

    Separate `nas search` processes on one run seed their samplers by it: with one seed they
    would propose the same configs (the same first generation, shifted by the warm start)."""
    slots = slot_holders(lock_path, key)
    with file_lock(lock_path):
        taken = set(slots.others().values())
        index = next(i for i in range(len(taken) + 1) if i not in taken)
        slots.set(index)
    try:
        yield index
    finally:
        with file_lock(lock_path):
            slots.set(None)


def _key(config: Any) -> str:
    return json.dumps(config, sort_keys=True)


def _drop_tried(untried: dict[str, Any], trials: Sequence[optuna.trial.FrozenTrial]) -> None:
    """Forget the warm-start configs these trials evaluated."""
    if untried:
        for t in trials:
            untried.pop(_key(t.user_attrs.get("config")), None)


def run_worker(*, storage: Any, study_name: str, directions: Sequence[str], sampler: optuna.samplers.BaseSampler,
               suggest: Callable[[optuna.Trial], dict[str, int]], evaluate: Evaluate, target: int, batch: int,
               lock_path: Path, warm_start: Sequence[dict[str, int]] = (), worker: int = 0,
               on_progress: Callable[[int], None] = lambda n: None) -> int:
    """Run trials until the study holds `target` finished trials; returns how many this worker added.

    `evaluate(configs)` returns (objective vectors, constraints {name: value <= 0 feasible}) per config.
    """
    persistent = optuna.create_study(study_name=study_name, storage=storage, directions=list(directions),
                                     load_if_exists=True)
    memory = optuna.create_study(directions=list(directions), sampler=sampler)
    reservations = LiveHolders(lock_path.with_name("reservations.json"), study_name, lease=REMOTE_LEASE_S)
    # Warm-start configs in a live worker's batch not persisted yet: no other worker enqueues them too.
    # Leased like the reservations they are made and freed with (a killed worker on another host, or
    # in a container since restarted under a new host name, would hold them for good).
    claims = LiveHolders(lock_path.with_name("warm_claims.json"), study_name, lease=REMOTE_LEASE_S)
    known: set[str] = set()
    untried = {_key(c): c for c in warm_start}

    def release(claimed_warm: bool) -> None:
        # Under the lock: this worker's batch is persisted or abandoned.
        reservations.set(None)
        if claimed_warm:
            claims.set(None)

    # A journal file syncs a batch once (nas.journal); other storages write trial by trial.
    one_write = getattr(storage, "one_write", contextlib.nullcontext)
    added = 0
    while True:
        claiming = False
        try:
            with file_lock(lock_path):
                fresh = [t for t in persistent.get_trials(deepcopy=False, states=COMPLETE)
                         if t.user_attrs.get("uid") not in known]
                if fresh:
                    memory.add_trials(fresh)
                    known.update(t.user_attrs["uid"] for t in fresh)
                    _drop_tried(untried, fresh)
                done = len(known)
                others = sum(reservations.others().values())
                take = max(0, min(batch, target - done - others))
                if take:
                    reservations.set(take)
                    if untried:
                        # Warm-start configs not tried yet go first, batch after batch, whichever worker
                        # gets there (a list longer than a generation, a second worker, a resumed study:
                        # each lost the tail before), except those in another live worker's unfinished batch.
                        claimed = {k for keys in claims.others().values() for k in keys}
                        mine = [k for k in untried if k not in claimed][:take]
                        claiming = bool(mine)
                        if claiming:
                            claims.set(mine)
                        for k in mine:
                            memory.enqueue_trial(untried[k], skip_if_exists=True)
            on_progress(done)
            raise_if_interrupted()
            if not take:
                if done >= target:
                    return added
                time.sleep(0.1)  # other workers hold the remaining slots; wait for them to persist
                continue
            trials = [memory.ask() for _ in range(take)]
            configs = [suggest(t) for t in trials]
            values, constraints = evaluate(configs)
            uids = []
            for trial, config, vals, cons in zip(trials, configs, values, constraints):
                uid = uuid.uuid4().hex
                uids.append(uid)
                trial.set_user_attr("uid", uid)
                trial.set_user_attr("worker", worker)
                trial.set_user_attr("config", config)
                for name, v in cons.items():
                    trial.set_constraint(name, float(v))
                memory.tell(trial, vals)
            wanted = set(uids)
            finished = [t for t in memory.get_trials(deepcopy=False, states=COMPLETE)
                        if t.user_attrs.get("uid") in wanted]
            _drop_tried(untried, finished)
            with file_lock(lock_path):
                # Counted again: had this batch outlived its lease (REMOTE_LEASE_S), others may have
                # filled its slots since; whatever the study holds beyond its target is not kept.
                stored = len(persistent.get_trials(deepcopy=False, states=COMPLETE))
                finished = finished[:max(0, target - stored - sum(reservations.others().values()))]
                with one_write():
                    persistent.add_trials(finished)
                # What is known of the study is what it holds: trials not kept stay out of the count.
                known.update(t.user_attrs["uid"] for t in finished)
                release(claiming)
        except BaseException:
            # Interrupted (Ctrl-C) or failed anywhere from the reservation on, the progress callback
            # included: free the batch's slots and warm-start claims, which a live process would
            # otherwise hold for ever (the other workers waited on them).
            with file_lock(lock_path):
                release(claiming)
            raise
        added += len(finished)
