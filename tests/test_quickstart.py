"""The embedded default, run in full (about a minute): `python -m pytest -m slow`."""

import json

import pandas as pd
import pytest

from scenarios.loader import load_scenario
from scenarios.runner import RunOptions, run_scenario


@pytest.mark.slow
def test_quickstart_lowers_held_out_loss(tmp_path, ray_local):
    run = run_scenario(load_scenario("quickstart"), RunOptions(out=tmp_path / "quickstart", progress=False))
    rounds = pd.read_parquet(run / "rounds.parquet")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["fleet_size"] >= 1000 and summary["rounds"] >= 12
    assert summary["emulated_model"] == "SmolLM2-135M"
    # a new domain for the base model: at least a tenth of its loss is learned
    assert summary["final_eval_loss"] < 0.9 * summary["base_eval_loss"]
    # the emulated model's adapter is under 3% of its weights: LoRA saves over 97% of the uplink
    assert summary["uplink_fraction_of_full"] < 0.03
    # the curve falls over the run, not only at its end
    losses = rounds["eval_loss"].to_numpy()
    assert losses[len(losses) // 2] < losses[0] and losses[-1] < losses[len(losses) // 2]
    assert (run / "report.html").stat().st_size > 0
