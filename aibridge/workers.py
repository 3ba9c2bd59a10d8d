"""Several proxy processes on one port: ``aibridge proxy --workers N``.

One Python process serves from one core. The supervisor here starts N worker processes; each binds
the same address with ``SO_REUSEPORT`` (the kernel spreads new connections over them) and runs the
whole proxy on its own: its own event loop, upstream client, producer and spool directory.

- **Metrics** are kept in prometheus-client's multiprocess mode: every worker writes its samples to
  files in one directory the supervisor creates, and ``/metrics`` on any worker reads them all, so
  counters from every worker add up. The supervisor removes a dead worker's live gauges.
- **Limits** for the replica (``AIBRIDGE_MAX_RPS``, ``AIBRIDGE_MAX_CONCURRENT``) are split evenly
  between the workers, so the replica as a whole keeps the configured figure.
- **Shutdown**: SIGTERM or SIGINT is passed to every worker, and the supervisor waits for each to
  finish its in-flight requests and flush its events (``AIBRIDGE_SHUTDOWN_GRACE``, then a kill).
- **A dead supervisor** (even killed with SIGKILL) takes its workers with it: each gets SIGTERM.
- **A crashed worker** is started again after a back-off (1 s, doubling up to 30 s, back to 1 s once
  a worker has run a minute); a worker that exits with a configuration error (code 2) stops the lot.
"""

from __future__ import annotations

import ctypes
import logging
import math
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from pathlib import Path

log = logging.getLogger("aibridge.workers")

CONFIGURATION_ERROR = 2
_BACKOFF_FIRST = 1.0
_BACKOFF_MAX = 30.0
_HEALTHY_AFTER = 60.0
_STOP_SLACK = 10.0
_SPAWN = multiprocessing.get_context("spawn")
_PR_SET_PDEATHSIG = 1


def cpu_limit(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """The cores this process may use: the container's CPU quota (cgroup v2 ``cpu.max``, or v1
    ``cpu.cfs_quota_us`` over ``cpu.cfs_period_us``) rounded up, else the CPUs it may run on."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = _cgroup_quota(cgroup_root)
    return max(1, min(available, math.ceil(quota))) if quota else available


def _cgroup_quota(root: Path) -> float | None:
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` that other workers can bind too (``SO_REUSEPORT``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def check_port_free(host: str, port: int) -> None:
    """Raise OSError if something already listens on ``host:port`` (a plain bind, no port sharing):
    without this check, workers would quietly join another process's ``SO_REUSEPORT`` group."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))


def share(total: float, workers: int) -> float:
    """One worker's part of a replica-wide rate limit (0 stays off)."""
    return total / workers if total > 0 else 0


def share_count(total: int, workers: int) -> int:
    """One worker's part of a replica-wide count limit: at least 1, rounded up (0 stays off)."""
    return max(1, math.ceil(total / workers)) if total > 0 else 0


Target = Callable[[int, int], int]  # (worker index, worker count) -> exit code


@dataclass
class _Worker:
    index: int
    process: BaseProcess | None = None
    started: float = 0.0
    backoff: float = _BACKOFF_FIRST
    restart_at: float | None = None


@dataclass
class Supervisor:
    """Starts ``count`` workers running ``target(index, count)``, restarts crashed ones, stops them all."""

    count: int
    target: Target
    stop_timeout: float = 30.0
    metrics_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="aibridge-metrics-")))
    _workers: list[_Worker] = field(default_factory=list)
    _stopping: int | None = None
    _exit_code: int = 0

    def run(self) -> int:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(self.metrics_dir)
        previous = {sig: signal.signal(sig, self._request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self._workers = [_Worker(index) for index in range(self.count)]
            for worker in self._workers:
                self._start(worker)
            log.info("%d proxy workers started", self.count)
            while self._stopping is None:
                self._watch()
            self._stop_all()
            return self._exit_code
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            shutil.rmtree(self.metrics_dir, ignore_errors=True)

    def pids(self) -> list[int]:
        return [w.process.pid for w in self._workers if w.process is not None and w.process.pid is not None]

    def _request_stop(self, signum: int, frame: object) -> None:
        if self._stopping is None:
            self._stopping = signum

    def _start(self, worker: _Worker) -> None:
        arguments = (self.target, worker.index, self.count, os.getpid())
        process = _SPAWN.Process(target=_run_worker, args=arguments, daemon=False)
        process.start()
        worker.process, worker.started, worker.restart_at = process, time.monotonic(), None

    def _watch(self) -> None:
        live = [w.process.sentinel for w in self._workers if w.process is not None]
        wait(live, timeout=0.5)
        now = time.monotonic()
        for worker in self._workers:
            if worker.process is not None and not worker.process.is_alive():
                self._ended(worker, now)
            if self._stopping is None and worker.restart_at is not None and now >= worker.restart_at:
                self._start(worker)

    def _ended(self, worker: _Worker, now: float) -> None:
        assert worker.process is not None
        code, pid = worker.process.exitcode, worker.process.pid
        worker.process = None
        _mark_dead(pid, self.metrics_dir)
        if self._stopping is not None:
            return
        if code == CONFIGURATION_ERROR:
            log.error("proxy worker %d cannot start (exit code %d): stopping", worker.index, code)
            self._exit_code, self._stopping = CONFIGURATION_ERROR, signal.SIGTERM
            return
        if now - worker.started >= _HEALTHY_AFTER:
            worker.backoff = _BACKOFF_FIRST
        log.error(
            "proxy worker %d (pid %s) exited with code %s: restarting in %.0fs", worker.index, pid, code, worker.backoff
        )
        worker.restart_at = now + worker.backoff
        worker.backoff = min(worker.backoff * 2, _BACKOFF_MAX)

    def _stop_all(self) -> None:
        running = [w.process for w in self._workers if w.process is not None]
        log.info("stopping %d proxy workers", len(running))
        for process in running:
            if process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout + _STOP_SLACK
        for process in running:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.error("proxy worker pid %s did not stop in time: killing it", process.pid)
                process.kill()
                process.join()
            if process.exitcode not in (0, None) and self._exit_code == 0:
                self._exit_code = 1


def _run_worker(target: Target, index: int, count: int, supervisor: int) -> None:
    _stop_with_parent(supervisor)
    raise SystemExit(target(index, count))


def _stop_with_parent(supervisor: int) -> None:
    """Get SIGTERM when the supervisor dies, however it dies (even SIGKILL): a worker never outlives it
    to hold the port and its memory. Linux's ``PR_SET_PDEATHSIG``; elsewhere nothing."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() != supervisor:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _mark_dead(pid: int | None, directory: Path) -> None:
    if pid is None:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]
