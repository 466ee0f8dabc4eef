"""Every strategy runs from a scenario file end to end: real training on a tiny fleet, two versions."""

import json

import numpy as np
import pandas as pd
import pytest

from aggregation import strategy_names
from scenarios.loader import load_scenario
from scenarios.runner import RunOptions, run_scenario

TINY = [
    "fleet.size=60",
    "run.rounds=2",
    "run.clients_per_round=6",
    "run.deadline_s=600",
    "training.local_steps=2",
    "training.batch_size=4",
    "data.eval_windows=16",
    "output.report=false",
    "runtime.workers=1",
]

EXTRA = {
    "pwff": ["model.lora.bottleneck=8"],
    "krum": ["run.min_reports=5"],
    "multikrum": ["run.min_reports=5"],
    "hetlora": ["model.lora.ranks={low_end_phone: 2, iot_gateway: 4}"],
    "flexlora": ["model.lora.ranks={low_end_phone: 2, iot_gateway: 4}"],
    "flora": ["model.lora.ranks={low_end_phone: 2, iot_gateway: 4}"],
    "fedbuff": ["strategy.buffer_size=3"],
    "dp_fedavg": ["strategy.noise_multiplier=0.5", "strategy.clip_norm=0.1"],
}


# One of each family runs by default; the rest with -m slow (each run starts its own workers: ~12 s).
FAST = {"fedbuff", "pwff", "flora", "dp_fedavg", "secagg_fedavg", "krum"}


@pytest.mark.parametrize(
    "name", [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in strategy_names()]
)
def test_strategy_runs_end_to_end(name, tmp_path, ray_local):
    scenario = load_scenario("quickstart", TINY + [f"strategy.name={name}"] + EXTRA.get(name, []))
    run = run_scenario(scenario, RunOptions(out=tmp_path / name, progress=False))
    rounds = pd.read_parquet(run / "rounds.parquet")
    assert rounds["version"].iloc[-1] == 2 and np.isfinite(rounds["eval_loss"]).all()
    assert json.loads((run / "summary.json").read_text())["strategy"] == name
    assert (rounds["completed"].iloc[1:] > 0).all()
    # The aggregated updates moved the model. FedSA-LoRA shares only A and keeps B (zero at the start) on the
    # devices, so the global adapter alone changes nothing: there the devices' own loss moves.
    moved = rounds["personal_loss" if name == "fedsa_lora" else "eval_loss"]
    assert moved.iloc[-1] != moved.iloc[0]
    assert np.isfinite(rounds["personal_loss"]).all()
    if name in ("pwff", "fedsa_lora"):  # devices evaluate with the personal part they trained
        assert rounds["personal_loss"].iloc[-1] != rounds["personal_global_loss"].iloc[-1]
    if name == "dp_fedavg":
        assert (rounds["epsilon"].iloc[1:].diff().dropna() > 0).all()
    if name == "flora":
        assert (run / "adapter" / "base_delta.safetensors").exists()
    if name == "pwff":
        assert (run / "adapter" / "bottleneck.safetensors").exists()


def test_asynchronous_runs_are_the_same_on_one_and_two_workers(tmp_path, ray_local):
    frames = []
    for workers in (1, 2):
        scenario = load_scenario("quickstart", TINY + ["strategy.name=fedbuff", "strategy.buffer_size=3",
                                                       "run.rounds=3", "run.eval_every=2",
                                                       f"runtime.workers={workers}"])
        run = run_scenario(scenario, RunOptions(out=tmp_path / f"w{workers}", progress=False))
        frames.append((pd.read_parquet(run / "rounds.parquet"),
                       pd.read_parquet(run / "clients.parquet")))
    pd.testing.assert_frame_equal(frames[0][0], frames[1][0])
    assert frames[0][0]["eval_loss"].isna().tolist() == [False, True, False, False]  # versions 0, 2, 3
    pd.testing.assert_frame_equal(frames[0][1], frames[1][1])


def test_per_device_state_lives_in_the_run_folder_while_it_runs(tmp_path, ray_local):
    # Personal parts and residuals are kept in files under the run folder during the run, not in the
    # driver's memory, and removed once it ends: they are no result.
    scenario = load_scenario("quickstart", TINY + ["strategy.name=fedsa_lora", "strategy.compression.name=q8"])
    out, seen = tmp_path / "run", []
    on_round = lambda row: seen.append(sorted(p.parent.name for p in (out / "state").rglob("block_*.bin")))  # noqa: E731
    run = run_scenario(scenario, RunOptions(out=out, progress=False, on_round=on_round))
    assert seen[-1] == ["personal", "residual"]
    assert not (run / "state").exists() and (run / "rounds.parquet").exists()
