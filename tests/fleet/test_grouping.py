"""Jobs are grouped by the schedule alone: by base version, in arrival order, cut at the group size or when the
emulator waits for results. A run's numbers are then the same on 1 and 2 workers."""

import pandas as pd
import pytest

from fleet.grouping import GroupedHost, Member
from fleet.trainer import TrainJob
from scenarios.loader import load_scenario
from scenarios.runner import RunOptions, run_scenario


class Pool:
    """Records what would reach the workers; a group's result is its jobs' clients, an evaluation its name."""

    def __init__(self):
        self.groups: list[list[int]] = []

    def put(self, tensor):
        return tensor

    def train_group(self, jobs, starts, base):
        self.groups.append([j.client for j in jobs])
        return ("group", len(self.groups) - 1, tuple((j.client, s, base) for j, s in zip(jobs, starts)))

    def evaluate(self, adapter, base):
        return ("eval", adapter)

    def get(self, refs):
        return [list(ref[2]) if ref[0] == "group" else f"loss of {ref[1]}" for ref in refs]


def job(client: int, version: int) -> TrainJob:
    return TrainJob(client=client, data_client=client, round=1, base_version=version, steps=1)


def test_groups_are_cut_at_their_size_per_base_version_and_when_results_are_awaited():
    pool = Pool()
    host = GroupedHost(pool, group_size=3)
    handles = [host.train(job(c, version=c % 2), f"start{c}", f"base{c % 2}") for c in range(7)]
    assert pool.groups == [[0, 2, 4], [1, 3, 5]]  # each version's first three; 6 waits in an open group
    assert all(isinstance(h, Member) for h in handles)
    results = host.get([handles[6], host.evaluate("adapter", None), handles[1]])
    assert pool.groups == [[0, 2, 4], [1, 3, 5], [6]]  # waiting sends the open group of version 0
    assert results == [(6, "start6", "base0"), "loss of adapter", (1, "start1", "base1")]
    assert host.get([handles[0]]) == [(0, "start0", "base0")]  # a result can be read again
    assert pool.groups == [[0, 2, 4], [1, 3, 5], [6]]


def test_a_group_size_below_one_is_refused():
    with pytest.raises(ValueError, match="group_size"):
        GroupedHost(Pool(), 0)


TINY = ["fleet.size=60", "run.rounds=3", "run.clients_per_round=6", "run.deadline_s=600", "training.local_steps=2",
        "training.batch_size=4", "data.eval_windows=16", "output.report=false", "runtime.group_size=4"]


@pytest.mark.parametrize("strategy", [pytest.param("fedavg", marks=pytest.mark.slow), "fedbuff"])
def test_grouped_runs_are_the_same_on_one_and_two_workers(tmp_path, ray_local, strategy):
    frames = []
    for workers in (1, 2):
        scenario = load_scenario("quickstart", TINY + [f"strategy.name={strategy}", f"runtime.workers={workers}"])
        run = run_scenario(scenario, RunOptions(out=tmp_path / f"{strategy}{workers}", progress=False))
        frames.append([pd.read_parquet(run / name) for name in ("rounds.parquet", "clients.parquet")])
    for one, two in zip(*frames):
        pd.testing.assert_frame_equal(one.drop(columns=[c for c in one if c.startswith("wall")]),
                                      two.drop(columns=[c for c in two if c.startswith("wall")]))
    rounds = frames[0][0]
    assert rounds["eval_loss"].iloc[-1] < rounds["eval_loss"].iloc[0]  # the grouped updates trained the model
