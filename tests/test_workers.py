"""The worker count from the container's CPU limit, and how a replica's limits are split between workers."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from aibridge import workers
from aibridge.proxy.settings import ProxySettings
from aibridge.runner import worker_overrides


def cores() -> int:
    return len(os.sched_getaffinity(0))


def test_cgroup_v2_quota_is_rounded_up_and_capped_by_the_cpus(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert workers.cpu_limit(tmp_path) == min(2, cores())
    (tmp_path / "cpu.max").write_text("100000000 100000\n")  # 1000 CPUs of quota: the CPUs bound it
    assert workers.cpu_limit(tmp_path) == cores()


def test_cgroup_v2_without_a_quota_means_every_cpu(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert workers.cpu_limit(tmp_path) == cores()


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert workers.cpu_limit(tmp_path) == 1
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")  # unlimited
    assert workers.cpu_limit(tmp_path) == cores()


def test_no_cgroup_files_means_every_cpu(tmp_path: Path) -> None:
    assert workers.cpu_limit(tmp_path) == cores()


def test_replica_limits_are_split_between_workers_and_off_stays_off(tmp_path: Path) -> None:
    settings = ProxySettings(max_rps=100, max_concurrent=5, user_max_rpm=60, spool_dir=tmp_path / "spool")
    own = [worker_overrides(settings, index, 2) for index in range(2)]
    assert [o["max_rps"] for o in own] == [50, 50]
    assert [o["max_concurrent"] for o in own] == [3, 3]  # rounded up: never below the configured total
    assert "spool_dir" not in own[0]  # the first worker replays what a single process spooled there
    assert own[1]["spool_dir"] == tmp_path / "spool" / "worker-1"
    assert "user_max_rpm" not in own[0]  # a user's connection stays on one worker: per worker, as per replica
    off = worker_overrides(ProxySettings(), 0, 4)
    assert off == {"max_rps": 0, "max_concurrent": 0}


def test_a_taken_port_is_refused_before_any_worker_starts() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError):
            workers.check_port_free("127.0.0.1", taken.getsockname()[1])


def test_workers_share_a_port() -> None:
    first = workers.reuse_port_socket("127.0.0.1", 0)
    try:
        port = first.getsockname()[1]
        second = workers.reuse_port_socket("127.0.0.1", port)
        second.close()
    finally:
        first.close()
