"""The reload state machine, driven through a stand-in for the master (no fork, no signal).

The real master runs it in tests/integration/test_master.py; here each path is taken on
purpose: promotion once every new worker serves, a HUP during a reload, an invalid file,
workers that never start.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeproxy.check import check_config
from edgeproxy.config import Address, Config
from edgeproxy.process.reload import Reloader
from edgeproxy.process.shared import SharedState
from edgeproxy.process.sockets import ListenSet
from edgeproxy.process.workers import Generation, WorkerProc


def config_text(workers: int, listen: str = "127.0.0.1:0") -> str:
    return (
        f"workers: {workers}\n"
        "access_log: {format: off}\n"
        f"servers:\n  - listen: ['{listen}']\n"
        "    locations: [{path: /, return: {status: 200}}]\n"
    )


class StandInMaster:
    """Just what a reload uses of the master, with spawning and retiring recorded."""

    def __init__(self, config: Config) -> None:
        self.current = Generation(1, config)
        self.workers: dict[int, WorkerProc] = {}
        self.listeners = ListenSet(slots=1)
        self.shared = SharedState(worker_rows=8, peer_rows=4)
        self.spawn_fails = False
        self.switched: list[Generation] = []
        self.failed_reloads = 0
        self._next_pid = 1000

    def spawn(self, generation: Generation, slot: int) -> WorkerProc | None:
        if self.spawn_fails:
            return None
        self._next_pid += 1
        worker = WorkerProc(self._next_pid, slot, 0, generation, started=0.0)
        self.workers[worker.pid] = worker
        return worker

    def retire(self, worker: WorkerProc) -> None:
        worker.retiring = True

    def live_configs(self) -> list[Config]:
        return [self.current.config]

    def switch_to(self, generation: Generation) -> int:
        self.current = generation
        self.switched.append(generation)
        old = [w for w in self.workers.values() if w.generation is not generation]
        for worker in old:
            worker.retiring = True
        return len(old)

    def reload_failed(self) -> None:
        self.failed_reloads += 1


@pytest.fixture
def path(tmp_path: Path) -> Path:
    path = tmp_path / "proxy.yaml"
    path.write_text(config_text(workers=1))
    return path


@pytest.fixture
def master(path: Path) -> Iterator[StandInMaster]:
    master = StandInMaster(check_config(str(path)))
    yield master
    master.listeners.close_all()


def serve(master: StandInMaster, generation: int) -> None:
    for worker in master.workers.values():
        if worker.generation.number == generation:
            worker.ready = True


def test_a_reload_promotes_its_generation_once_every_worker_serves(
    master: StandInMaster, path: Path
) -> None:
    path.write_text(config_text(workers=2))
    reloader = Reloader(master, str(path))
    reloader.request()
    starting = [w for w in master.workers.values() if reloader.starting(w)]
    assert [w.slot for w in starting] == [0, 1]
    assert reloader.config() is starting[0].generation.config
    starting[0].ready = True
    reloader.progress(now=0.0)
    assert master.switched == []  # one of two serves: not yet
    serve(master, 2)
    reloader.progress(now=0.0)
    assert [g.number for g in master.switched] == [2]
    assert master.current.config.workers == 2
    assert reloader.pending is None and reloader.config() is None
    assert master.failed_reloads == 0


def test_a_hup_during_a_reload_runs_after_it_with_the_newest_file(
    master: StandInMaster, path: Path
) -> None:
    reloader = Reloader(master, str(path))
    reloader.request()
    path.write_text(config_text(workers=3))
    reloader.request()  # remembered, not started beside the first
    assert len(master.workers) == 1
    serve(master, 2)
    reloader.progress(now=0.0)
    assert [g.number for g in master.switched] == [2]
    pending = reloader.pending
    assert pending is not None and pending.generation.number == 3
    assert pending.generation.config.workers == 3


def test_an_invalid_file_changes_nothing(
    master: StandInMaster, path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path.write_text("workerz: 2\n")
    reloader = Reloader(master, str(path))
    with caplog.at_level(logging.ERROR, "edgeproxy.master"):
        reloader.request()
    assert reloader.pending is None and master.workers == {}
    assert f"{path}:1: workerz: unknown key" in caplog.text
    assert master.failed_reloads == 1


def test_workers_that_do_not_start_in_time_are_retired_and_their_addresses_closed(
    master: StandInMaster, path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    added = Address("unix", path=str(path.parent / "new.sock"))
    path.write_text(config_text(workers=1, listen=str(added)))
    reloader = Reloader(master, str(path))
    reloader.request()
    assert added in master.listeners
    pending = reloader.pending
    assert pending is not None
    reloader.progress(now=pending.deadline - 0.1)
    assert reloader.pending is pending  # still waiting
    with caplog.at_level(logging.ERROR, "edgeproxy.master"):
        reloader.progress(now=pending.deadline + 0.1)
    assert reloader.pending is None and master.switched == []
    assert all(w.retiring for w in master.workers.values())
    assert added not in master.listeners and not Path(added.path).exists()
    assert "its workers did not start in time" in caplog.text
    assert master.failed_reloads == 1


def test_a_worker_that_cannot_be_forked_cancels_the_reload(
    master: StandInMaster, path: Path
) -> None:
    master.spawn_fails = True
    reloader = Reloader(master, str(path))
    reloader.request()
    assert reloader.pending is None and master.switched == []
    assert master.failed_reloads == 1
