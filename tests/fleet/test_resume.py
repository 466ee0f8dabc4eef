"""A run resumed from a checkpoint records exactly what the uninterrupted run records after it: the clock is
replayed from the journal, training state comes from the checkpoint file. A fake host trains (seeded deltas
per client and round, some of them NaN, so the screen rejects updates), so no Ray is needed."""

import numpy as np
import pandas as pd
import pytest
import torch

from aggregation import AdapterLayout, StrategyContext, build_strategy
from aggregation.compression import ErrorFeedback, build_codec
from analysis import checkpoint
from fleet.attacks import Attack
from fleet.cells import Radio
from fleet.clients import ClientSide
from fleet.devices import sample_fleet
from fleet.emulator import Emulator, RoundRules, SessionCost
from fleet.rng import stream_key
from fleet.selection import Oort, Uniform
from fleet.trainer import TrainResult

P = 500
LAYOUT = AdapterLayout.from_shapes([("adapter.weight", (P,))], rank=1, scaling=1.0)


class SeededHost:
    """A job's delta and losses depend on (client, round) only; every 13th client sends NaN."""

    def put(self, tensor):
        return None if tensor is None else tensor.clone()

    def train(self, job, start, base_delta):
        g = torch.Generator().manual_seed(stream_key(0, "delta", job.client, job.round) % 2**63)
        delta = 0.01 * torch.randn(P, generator=g) + 0.001 * start.sum()
        if job.client % 13 == 0:
            delta[0] = float("nan")
        loss = 1.0 + float(torch.rand(1, generator=g))
        return TrainResult(job, delta, 100, loss, loss - 0.1)

    def evaluate(self, adapter, base_delta):
        return float(adapter.double().square().sum())

    def evaluate_clients(self, adapter, groups, clients, n_windows, base_delta):
        return [(float(adapter.sum()), float(adapter.mean()))] * len(clients)

    def get(self, handles):
        return list(handles)


class FileSink:
    """Rows and sessions in memory; each checkpoint written to its own file, as a run folder holds one."""

    def __init__(self, folder):
        self.folder, self.rounds, self.sessions_rows, self.checkpoints = folder, [], [], []
        folder.mkdir(exist_ok=True)

    def round(self, row):
        self.rounds.append(row)

    def sessions(self, columns):
        self.sessions_rows.extend(dict(zip(columns, values)) for values in zip(*columns.values()))

    def checkpoint(self, state):
        path = self.folder / f"c{len(self.checkpoints)}.safetensors"
        checkpoint.save(path, state)
        self.checkpoints.append((path, len(self.rounds), len(self.sessions_rows)))


def emulate(folder, strategy, selector, resume=None, rounds=8):
    fleet = sample_fleet(0, 300, {"flagship_phone": 0.5, "iot_gateway": 0.5}, cells=3, cell_radius_m=250,
                         shadowing_sigma_db=6, initial_charge=(0.5, 1.0), num_data_clients=50)
    strategy = build_strategy(strategy)
    strategy.setup(StrategyContext(LAYOUT, population=len(fleet), cohort=5, seed=0))
    clients = ClientSide(LAYOUT, strategy, torch.zeros(P), 0, Attack(), np.zeros(len(fleet), bool),
                         ErrorFeedback(build_codec("q8")))
    sink = FileSink(folder)
    emulator = Emulator(
        seed=0, fleet=fleet, num_samples=np.full(50, 100),
        rules=RoundRules(rounds, 5, 7, 600.0, "deadline", min_reports=2, eval_every=1, local_steps=4,
                         min_charge=0.2, cutoff_charge=0.1, only_while_charging=False),
        radio=Radio("uma_nlos", 3.5, 20e6, 20e6, 46.0, 7.0, "ofdma", "rayleigh", 9.0, -10.0, 1e9, 0.005),
        cost=SessionCost(5e12, 4 * P, 4 * P), selector=selector, adapter=torch.zeros(P), strategy=strategy,
        clients=clients, host=SeededHost(), sink=sink, checkpoint_every=2, resume=resume,
    )
    return emulator.run(), sink


def frame(rows):
    return pd.DataFrame(rows).reset_index(drop=True)


@pytest.mark.parametrize("strategy, selector", [("fedavgm", Oort()), ("fedbuff", Uniform()), ("fedasync", Uniform())])
def test_resumed_run_records_what_the_whole_run_records(tmp_path, strategy, selector):
    whole_final, whole = emulate(tmp_path, strategy, selector)
    rejected = sum(r["rejected_nonfinite"] for r in whole.rounds)
    assert rejected > 0  # the journal has screening decisions to replay
    assert len(whole.checkpoints) == 4
    path, rows, sessions = whole.checkpoints[1]  # after round (or version) 4 of 8
    final, resumed = emulate(tmp_path / "again", strategy, selector, resume=checkpoint.load(path))
    pd.testing.assert_frame_equal(frame(resumed.rounds), frame(whole.rounds[rows:]))
    pd.testing.assert_frame_equal(frame(resumed.sessions_rows), frame(whole.sessions_rows[sessions:]))
    assert torch.equal(final, whole_final)


def test_a_changed_scenario_is_refused_on_resume(tmp_path):
    (tmp_path / "again").mkdir()
    _, whole = emulate(tmp_path, "fedavg", Uniform())
    state = checkpoint.load(whole.checkpoints[0][0])
    state["now"] += 1.0  # as if the clock had run differently
    with pytest.raises(RuntimeError, match="differs from its checkpoint in now"):
        emulate(tmp_path / "again", "fedavg", Uniform(), resume=state)


def test_checkpoint_file_round_trip(tmp_path):
    """Tensors of every kind, arrays, ints as dict keys, sets, NaN, and a tensor met twice stored once; the
    loaded tensors can be changed without changing the file."""
    adapter = torch.randn(4, 3)
    tree = {"adapter": adapter, "versions": {3: adapter, 4: adapter[1]}, "charge": np.array([1.5, np.inf]),
            "index": torch.arange(5, dtype=torch.int32), "half": torch.ones(2, dtype=torch.float16),
            "empty": torch.zeros(0), "seen": {2, 1}, "loss": float("nan"), "none": None, "name": "x",
            "steps": [[1, "rejected_norm"]]}
    checkpoint.save(tmp_path / "c.safetensors", tree)
    back = checkpoint.load(tmp_path / "c.safetensors")
    assert torch.equal(back["adapter"], adapter) and back["versions"][3] is back["adapter"]
    assert torch.equal(back["versions"][4], adapter[1]) and list(back["versions"]) == [3, 4]
    assert np.array_equal(back["charge"], tree["charge"]) and back["index"].dtype == torch.int32
    assert back["half"].dtype == torch.float16 and back["empty"].shape == (0,)
    assert back["seen"] == {1, 2} and np.isnan(back["loss"]) and back["none"] is None and back["name"] == "x"
    assert back["steps"] == [[1, "rejected_norm"]]
    back["adapter"].add_(1.0)
    assert torch.equal(checkpoint.load(tmp_path / "c.safetensors")["adapter"], adapter)
    with pytest.raises(TypeError, match="cannot checkpoint a object"):
        checkpoint.save(tmp_path / "d.safetensors", {"x": object()})
