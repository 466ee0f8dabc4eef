"""A sweep trial whose task is lost is run again, a bounded number of times: one whose process dies at every
try is tried 1 + TRIAL_RETRIES times and recorded as failed, and the other trial is not disturbed. (A trial
whose node is lost, run again to the same records: tests/fleet/test_node_loss.py.)"""

import os

import pandas as pd
import pytest

import scenarios.sweep as sweep


@pytest.fixture(scope="module")
def small(tiny_jsonl) -> list[str]:
    """A quickstart that runs in about a second: systems mode, 100 devices, three rounds."""
    return ["run.mode=systems", "run.rounds=3", "fleet.size=100", "data.source=jsonl", f"data.path={tiny_jsonl}",
            "output.report=false"]


def test_a_trial_lost_at_every_try_is_tried_a_bounded_number_of_times(ray_local, tmp_path, monkeypatch, small):
    tries = tmp_path / "tries"
    tries.mkdir()
    run_trial = sweep.run_trial

    def dies_as_fedprox(scenario):
        if scenario.strategy.name != "fedprox":
            return run_trial(scenario)
        with (tries / "fedprox").open("a") as fh:
            fh.write("x")
        os._exit(1)  # the process dies, as with its node: not an error of the trial's own

    monkeypatch.setattr(sweep, "run_trial", dies_as_fedprox)
    monkeypatch.setattr(sweep, "TRIAL_RETRIES", 1)  # fewer process starts than the default
    sweep_dir = sweep.run_sweep("quickstart", ["strategy.name=fedavg,fedprox"], out=tmp_path / "sweep",
                                progress=False, fixed=small)

    assert (tries / "fedprox").read_text() == "xx"
    table = pd.read_parquet(sweep_dir / "sweep.parquet")
    assert table["status"].tolist() == ["ok", "failed"]
    assert "WorkerCrashedError" in table["error"][1] and pd.isna(table["error"][0])
    assert (sweep_dir / table["run"][0] / "rounds.parquet").is_file()
