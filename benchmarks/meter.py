"""CPU and peak memory of process trees (the daemon and everything it starts; Postgres).

Processes that exit lose their counters, so a background thread samples every tree often and
keeps, per process, its CPU time (own and reaped children) and its largest RSS. After the
window, CPU is counted as:
- a process still there at the end (zombies included): own + reaped-children CPU since the
  baseline (or since it started);
- a process gone by the end whose parent is still there: its last sample, taken out of the
  parent's reaped-children figure (so nothing is counted twice, and a worker that ran and was
  reaped between two samples is still counted, inside its parent's figure);
- a process gone together with its parent: its last sample (a lower bound).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import psutil

Key = tuple[int, float]  # (pid, create_time): pids are reused


@dataclass
class _Seen:
    pid: int
    created: float
    parent_pid: int
    role: str
    own_base: float = 0.0
    children_base: float = 0.0
    own: float = 0.0
    children: float = 0.0
    rss_max: int = 0
    present: bool = True


def default_role(process: psutil.Process, is_root: bool) -> str:
    if is_root:
        return "root"
    try:
        cmdline = " ".join(process.cmdline())
    except psutil.Error:
        return "other"
    if "api grpc" in cmdline or "code-server" in cmdline:
        return "code server"
    if "dagster" in cmdline or "multiprocessing" in cmdline or "execute_run" in cmdline:
        return "run worker"
    return "other"


class ProcessTreeMeter:
    """`with ProcessTreeMeter([pid]) as meter: ...; meter.mark_baseline(); ...; meter.cpu()`."""

    def __init__(
        self,
        roots: Iterable[int],
        interval: float = 0.2,
        root_role: str = "root",
        role: Callable[[psutil.Process, bool], str] = default_role,
        root_roles: Mapping[int, str] | None = None,
    ) -> None:
        self.roots = [psutil.Process(pid) for pid in roots]
        # A root's own role when it is not `root_role` (several roots: a daemon, a code server).
        self.root_roles = dict(root_roles or {})
        self.interval = interval
        self.root_role = root_role
        self.role = role
        self.seen: dict[Key, _Seen] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> ProcessTreeMeter:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join(timeout=5)
            self.sample()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def _tree(self) -> list[tuple[psutil.Process, bool]]:
        found: list[tuple[psutil.Process, bool]] = []
        for root in self.roots:
            found.append((root, True))
            try:
                found += [(child, False) for child in root.children(recursive=True)]
            except psutil.Error:
                continue
        return found

    def sample(self) -> None:
        present: set[Key] = set()
        with self._lock:
            for process, is_root in self._tree():
                try:
                    with process.oneshot():
                        key = (process.pid, process.create_time())
                        times = process.cpu_times()
                        rss = process.memory_info().rss
                        parent_pid = process.ppid()
                except psutil.Error:
                    continue
                entry = self.seen.get(key)
                if entry is None:
                    role = (
                        self.root_roles.get(process.pid, self.root_role)
                        if is_root
                        else self.role(process, False)
                    )
                    entry = self.seen[key] = _Seen(process.pid, key[1], parent_pid, role)
                entry.own = times.user + times.system
                entry.children = times.children_user + times.children_system
                entry.rss_max = max(entry.rss_max, rss)
                present.add(key)
            for key, entry in self.seen.items():
                entry.present = key in present

    def _parent(self, entry: _Seen, by_pid: dict[int, list[Key]]) -> Key | None:
        candidates = [key for key in by_pid.get(entry.parent_pid, ()) if key[1] <= entry.created]
        return max(candidates, key=lambda key: key[1]) if candidates else None

    def mark_baseline(self) -> None:
        """CPU from now on: what the processes have used so far is not counted."""
        self.sample()
        with self._lock:
            for entry in self.seen.values():
                entry.own_base, entry.children_base = entry.own, entry.children

    def cpu_by_role(self) -> dict[str, float]:
        """CPU seconds since the baseline, per role (see the module docstring)."""
        self.sample()
        with self._lock:
            roles: dict[str, float] = {}
            reaped: dict[Key, float] = {}
            by_pid: dict[int, list[Key]] = {}
            for key in self.seen:
                by_pid.setdefault(key[0], []).append(key)
            for entry in self.seen.values():
                if entry.present:
                    continue
                used = entry.own - entry.own_base + entry.children - entry.children_base
                roles[entry.role] = roles.get(entry.role, 0.0) + used
                parent = self._parent(entry, by_pid)
                if parent is not None and self.seen[parent].present:
                    reaped[parent] = reaped.get(parent, 0.0) + used
            for key, entry in self.seen.items():
                if not entry.present:
                    continue
                children = entry.children - entry.children_base
                used = entry.own - entry.own_base + max(0.0, children - reaped.get(key, 0.0))
                roles[entry.role] = roles.get(entry.role, 0.0) + used
        return {role: round(seconds, 3) for role, seconds in sorted(roles.items())}

    def cpu(self) -> float:
        return round(sum(self.cpu_by_role().values()), 3)

    def peak_rss_by_role(self) -> dict[str, int]:
        with self._lock:
            peaks: dict[str, int] = {}
            for entry in self.seen.values():
                peaks[entry.role] = max(peaks.get(entry.role, 0), entry.rss_max)
        return dict(sorted(peaks.items()))

    def process_count(self) -> int:
        return len(self.seen)


def wall_and_cpu() -> tuple[float, float]:
    """(monotonic seconds, CPU seconds of this process) for in-process measurements."""
    return time.perf_counter(), time.process_time()
