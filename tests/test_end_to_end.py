"""Small whole runs: the loss goes down, the run folder is complete, and workers do not change numbers."""

import json

import pandas as pd
import pytest
import torch

from fleet.emulator import OUTCOMES
from scenarios.loader import load_scenario
from scenarios.runner import RunOptions, run_scenario

SMALL = [
    "fleet.size=200",
    "run.rounds=4",
    "run.clients_per_round=4",
    "run.deadline_s=60",
    "training.local_steps=6",
    "training.batch_size=8",
    "data.eval_windows=64",
    "output.report=false",
]


def small_run(tmp_path, name, *extra):
    scenario = load_scenario("quickstart", SMALL + list(extra))
    return run_scenario(scenario, RunOptions(out=tmp_path / name, progress=False))


@pytest.fixture(scope="module")
def two_worker_run(tmp_path_factory, ray_local):
    return small_run(tmp_path_factory.mktemp("runs"), "w2", "runtime.workers=2")


def test_loss_goes_down_and_folder_is_complete(two_worker_run):
    run = two_worker_run
    rounds = pd.read_parquet(run / "rounds.parquet")
    assert rounds["round"].tolist() == [0, 1, 2, 3, 4]
    assert rounds["eval_loss"].iloc[-1] < rounds["eval_loss"].iloc[0]
    assert (rounds["completed"].iloc[1:] >= 1).all()
    clients = pd.read_parquet(run / "clients.parquet")
    assert len(clients) == rounds["selected"].sum()
    assert set(clients["outcome"]) <= set(OUTCOMES)
    completed = clients[clients["outcome"] == "completed"]
    assert (completed["bytes_up"] > 0).all() and (completed["t_end"] > completed["t_start"]).all()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["final_eval_loss"] == pytest.approx(rounds["eval_loss"].iloc[-1])
    assert (run / "scenario.resolved.yaml").exists()


def test_adapter_loads_with_peft(two_worker_run):
    from peft import PeftModel

    from fleet.base_model import load_base_model

    model = PeftModel.from_pretrained(load_base_model("builtin"), two_worker_run / "adapter")
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().max() > 0 for p in lora_b)  # trained: B starts at zero
    with torch.no_grad():
        out = model(input_ids=torch.tensor([[1, 2, 3]]))
    assert out.logits.shape[-1] == 512


def test_same_numbers_on_one_and_two_workers(tmp_path, two_worker_run, ray_local):
    one = small_run(tmp_path, "w1", "runtime.workers=1")
    a = pd.read_parquet(one / "rounds.parquet")
    b = pd.read_parquet(two_worker_run / "rounds.parquet")
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(pd.read_parquet(one / "clients.parquet"), pd.read_parquet(two_worker_run / "clients.parquet"))


def test_another_seed_gives_other_numbers(tmp_path, two_worker_run, ray_local):
    other = small_run(tmp_path, "s1", "seed=1")
    a = pd.read_parquet(other / "rounds.parquet")
    b = pd.read_parquet(two_worker_run / "rounds.parquet")
    assert not a["eval_loss"].equals(b["eval_loss"])


def test_report_opens_in_a_browser_with_data_in_every_figure(two_worker_run, browser):
    from analysis.browser import check_page
    from analysis.report import write_report

    result = check_page(write_report(two_worker_run))
    assert result.problems() == []
    titles = " | ".join(f.title for f in result.figures)
    assert "Held-out loss against simulated time" in titles and "cumulative uplink bytes" in titles


def test_model_path_takes_a_local_hugging_face_folder(tmp_path, ray_local):
    import shutil

    from fleet.base_model import BUILTIN_DIR

    folder = tmp_path / "my-model"
    shutil.copytree(BUILTIN_DIR, folder)
    run = small_run(tmp_path, "local", f"model.path={folder}", "run.rounds=1")
    rounds = pd.read_parquet(run / "rounds.parquet")
    assert rounds["completed"].iloc[1] >= 1
    config = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(folder)


def test_systems_mode_needs_no_training(tmp_path):
    scenario = load_scenario("fleet_10k", ["run.mode=systems", "run.rounds=2", "fleet.size=3000",
                                           "run.clients_per_round=200"])
    run = run_scenario(scenario, RunOptions(out=tmp_path / "systems", progress=False))
    rounds = pd.read_parquet(run / "rounds.parquet")
    assert rounds["eval_loss"].isna().all() and not (run / "adapter").exists()
    clients = pd.read_parquet(run / "clients.parquet")
    assert len(clients) == rounds["selected"].sum() == 2 * 260
    assert set(clients["device_class"]) == {"flagship_phone", "low_end_phone", "iot_gateway", "jetson_orin_nano",
                                            "mec_t4"}
    page = (run / "report.html").read_text()
    assert "Load per cell" in page and "Why sessions did not report" in page
    assert "Held-out loss against" not in page  # no loss figures without training


def test_fleet_10k_reports_per_class_and_per_cell(tmp_path, ray_local):
    scenario = load_scenario("fleet_10k", ["run.rounds=1", "run.clients_per_round=4", "data.eval_windows=32"])
    run = run_scenario(scenario, RunOptions(out=tmp_path / "f10k", progress=False))
    clients = pd.read_parquet(run / "clients.parquet")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["fleet_size"] == 10_000 and summary["emulated_model"] == "SmolLM2-135M"
    assert clients["cell"].max() < 24
    page = (run / "report.html").read_text()
    for title in ("Completion rate per device class", "Session duration per device class",
                  "Why sessions did not report", "Load per cell"):
        assert title in page
