"""`make test` on 2 pytest-xdist workers: each worker, and every process it starts, keeps to its
own share of the cores (tests/worker_cores.py); fixtures that outlive a test keep out of the
user's home."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from worker_cores import worker_cores, worker_index


@pytest.mark.parametrize(("cores", "workers", "shares"), [
    ([0, 1], 2, [{0}, {1}]),  # CI: a core each
    ([0], 2, [{0}, {0}]),  # more workers than cores: they share, in turn
    ([0, 1], 3, [{0}, {1}, {0}]),
    ([3, 2, 5, 4], 2, [{2, 3}, {4, 5}]),  # affinity sets need not start at 0 or be ordered
    (range(16), 2, [set(range(8)), set(range(8, 16))]),
    (range(5), 3, [{0}, {1, 2}, {3, 4}]),
])
def test_the_shares_cover_the_cores_without_overlap(cores, workers, shares):
    assert [worker_cores(cores, w, workers) for w in range(workers)] == shares


def test_a_worker_is_known_by_its_xdist_variables():
    assert worker_index({"PYTEST_XDIST_WORKER": "gw1", "PYTEST_XDIST_WORKER_COUNT": "2"}) == (1, 2)
    assert worker_index({}) is None  # a serial run: not pinned


def test_a_subprocess_a_test_starts_keeps_to_this_workers_share():
    """What `emaki` run as a subprocess (the server, the CLI, the README's commands) sees and
    decides for itself: this worker's cores, and no more threads than it has."""
    code = ("import os; from emaki.devices import DevicePolicy; "
            "print(sorted(os.sched_getaffinity(0)), DevicePolicy.choose('fp32', 'cpu').threads)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    share = os.sched_getaffinity(0)
    assert done.stdout.split("]")[0] + "]" == str(sorted(share))
    assert int(done.stdout.split("]")[1]) <= len(share) and torch.get_num_threads() <= len(share)
    index = worker_index(os.environ)
    if index is not None:  # under xdist: exactly this worker's slice of what the controller may use
        assert share == worker_cores(os.sched_getaffinity(os.getppid()), *index)


@pytest.fixture(scope="module")
def home_seen_by_a_module_fixture() -> str | None:
    return os.environ.get("EMAKI_HOME")


def test_module_fixtures_get_a_home_of_the_run_not_the_users(home_seen_by_a_module_fixture, tmp_path_factory):
    """Engines and servers a module fixture starts write there: never ~/.local/share/emaki, which
    both workers (and every other run on the machine) would share."""
    assert home_seen_by_a_module_fixture is not None
    home = Path(home_seen_by_a_module_fixture)
    assert home.is_relative_to(tmp_path_factory.getbasetemp()) and home != Path(os.environ["EMAKI_HOME"])
