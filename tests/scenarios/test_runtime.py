"""The runtime section's host options: group_size auto (sized from the scenario alone), gpus_per_worker (Ray's
resource accounting; refused at once where there are no such GPUs), train_dtype. Everything here runs on CPU."""

import json

import pytest
import torch

from fleet.pool import WorkerPool
from fleet.trainer import LoraSpec, TrainSettings
from scenarios.assembly import group_size
from scenarios.errors import ScenarioError
from scenarios.loader import load_scenario
from scenarios.runner import RunOptions, run_scenario
from scenarios.sweep import trial_bundles

SMALL = ["model.lora.target_modules=[q_proj, v_proj]", "model.lora.r=4", "training.batch_size=2",
         "training.seq_len=16", "runtime.group_size=auto"]


def auto(*overrides: str) -> int:
    return group_size(load_scenario("quickstart", [*SMALL, *overrides]))


def test_auto_group_size_by_hand():
    # The host trains the built-in model (quickstart emulates SmolLM2-135M only for the clock): h = 128,
    # intermediate 352, 4 layers of 4 heads x 32, vocabulary 512, tied embeddings. Its parameters:
    # embeddings 512 x 128 = 65,536; a layer 4 x 128 x 128 + 3 x 128 x 352 + 2 x 128 = 200,960; final norm 128;
    # 65,536 + 4 x 200,960 + 128 = 869,504, kept in float32: 3,478,016 B, plus 650 MB for the worker process.
    shared = 869_504 * 4 + 650_000_000
    # One client, 2 x 16 = 32 tokens. Values a layer keeps per token: its two norms' inputs (256); Q, K and V,
    # K and V repeated to the query width by eager attention (3 x 128); the attention input, q_proj and v_proj
    # being adapted (128); the gated MLP's gate and up outputs and SiLU's output (3 x 352); the two A outputs
    # (2 x 4): 256 + 384 + 128 + 1,056 + 8 = 1,832. Plus attention probabilities, 4 heads x 16 x 16 x 2 rows.
    values = 4 * (1_832 * 32 + 4 * 16 * 16 * 2)  # 242,688, float32
    logits = 32 * 512 * 12  # float32 logits, log-softmax and gradient
    step = 2 * (values * 4 + logits)  # a step's peak holds about twice what it saves
    # Adapters: A (4 x 128) and B (128 x 4) on q_proj and v_proj of 4 layers: 8,192 parameters, each with a
    # gradient and two Adam moments (16 B), four float32 copies (start, target, final, update) and two masks.
    adapter = 8_192 * (16 + 16 + 2)
    per_client = step + adapter  # 2,613,248 B
    budget = 665_000_000
    assert shared + 4 * per_client <= budget < shared + 5 * per_client
    assert auto("runtime.worker_memory_gb=0.665") == 4
    # A bottleneck of width 8 adds 4 x (2 x 128 x 8 + 8 + 128) = 8,736 parameters per client: only 3 fit.
    assert shared + 3 * (per_client + 8_736 * 34) <= budget < shared + 4 * (per_client + 8_736 * 34)
    assert auto("runtime.worker_memory_gb=0.665", "model.lora.bottleneck=8") == 3


def test_auto_group_size_is_clamped_and_the_same_on_any_host_layout():
    assert auto("runtime.worker_memory_gb=0.6") == 1  # not even the base fits: still one at a time
    assert auto("runtime.worker_memory_gb=64") == 10  # run.clients_per_round
    assert auto("runtime.worker_memory_gb=4096", "run.clients_per_round=2000", "fleet.size=3000") == 1024
    one = auto("runtime.worker_memory_gb=0.67", "runtime.workers=1")
    assert 1 < one < 10
    assert auto("runtime.worker_memory_gb=0.67", "runtime.workers=16", "runtime.threads_per_worker=4",
                "runtime.gpus_per_worker=0.25", "runtime.train_dtype=bf16") == one
    assert group_size(load_scenario("quickstart", ["runtime.group_size=7"])) == 7  # a number is taken as given


@pytest.mark.parametrize("override, reason", [
    ("runtime.group_size=0", "1 to 1024"), ("runtime.group_size=1025", "1 to 1024"),
    ("runtime.group_size=fast", "or 'auto'"), ("runtime.gpus_per_worker=1.5", "whole number"),
    ("runtime.gpus_per_worker=-0.5", "greater than or equal to 0"), ("runtime.train_dtype=fp16", "'fp32' or 'bf16'"),
    ("runtime.worker_memory_gb=0", "greater than 0"),
])
def test_bad_runtime_values_are_refused_naming_the_field(override, reason):
    with pytest.raises(ScenarioError, match=rf"{override.split('=')[0]}:.*{reason}"):
        load_scenario("quickstart", [override])


def test_a_sweep_trial_reserves_its_workers_gpu_shares():
    scenario = load_scenario("quickstart", ["runtime.workers=3", "runtime.gpus_per_worker=0.5"])
    assert trial_bundles(scenario) == [{"CPU": 1}] + [{"CPU": 1, "GPU": 0.5}] * 3
    assert trial_bundles(load_scenario("quickstart", [])) == [{"CPU": 1}, {"CPU": 1}, {"CPU": 1}]


# No machine this runs on shows Ray 64 GPUs; the schema's largest share.
TOO_MANY = "runtime.gpus_per_worker=64"


def test_a_run_asking_for_gpus_ray_does_not_have_stops_before_its_folder(tmp_path, ray_local):
    scenario = load_scenario("quickstart", [TOO_MANY, "run.rounds=1"])
    with pytest.raises(ScenarioError, match=r"runtime\.gpus_per_worker: a worker needs 64 GPU and the Ray cluster "
                                            r"has \d+"):
        run_scenario(scenario, RunOptions(out=tmp_path / "run", progress=False))
    assert not (tmp_path / "run").exists()


def test_a_pool_asking_for_missing_gpus_is_refused_before_anything_starts(ray_local):
    # No data at all: the pool would fail on it (putting it in the object store) had it gone further.
    with pytest.raises(ValueError, match="gpus_per_worker: a worker needs 64 GPU"):
        WorkerPool(1, 1, "builtin", LoraSpec(4, 8.0, 0.0, ("q_proj",)), TrainSettings(0, 2, 8, 1e-3, 0.0), None, None,
                   torch.zeros(1, 9, dtype=torch.int64), gpus_per_worker=64)


TINY = ["fleet.size=60", "run.rounds=2", "run.clients_per_round=6", "run.deadline_s=600", "training.local_steps=2",
        "training.batch_size=4", "data.eval_windows=16", "output.report=false", "runtime.workers=1"]


def test_a_bf16_run_with_auto_groups_reports_its_group_size_and_worker_memory(tmp_path, ray_local):
    scenario = load_scenario("quickstart", [*TINY, "runtime.group_size=auto", "runtime.train_dtype=bf16"])
    run = run_scenario(scenario, RunOptions(out=tmp_path / "run", progress=False))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["group_size"] == group_size(scenario) == 6  # 4 GB holds a round's six clients
    assert summary["worker_peak_rss_mb"] > 100 and summary["worker_peak_cuda_mb"] is None
    assert summary["final_eval_loss"] < summary["base_eval_loss"]
