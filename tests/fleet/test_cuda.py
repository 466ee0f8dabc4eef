"""Training on CUDA, checked where a GPU is (benchmarks/gpu_check.sh runs this file; without CUDA it skips).

A client's update in a group on the GPU equals its update alone on the GPU, and the CPU's, to float32 rounding;
in bf16 it stays close to the float32 one. Results come back as CPU float32 tensors, and a run whose workers
each hold a share of the GPU (Ray's accounting) trains there and reports its CUDA memory."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from fleet.base_model import load_base_model
from fleet.grouped import GroupedTrainer
from fleet.trainer import (LocalTrainer, LoraSpec, TrainJob, TrainSettings, adapter_layout, get_flat, windows,
                           wrap_with_lora)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

SETTINGS = TrainSettings(seed=0, batch_size=4, seq_len=32, lr=3e-3, weight_decay=0.01)
LORA = LoraSpec(r=4, alpha=8.0, dropout=0.0,
                target_modules=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"))
# float32 sums in another order (batched products, each adapted layer's own backward, another device's kernels),
# as relative L2 distance and as the largest difference of an entry (updates reach about 1e-2). On the CPU a
# group against alone measured up to 4.4e-6 and 7.9e-6 for these jobs, and 4.5e-4 and 4.7e-4 for the poisoned
# one (random tokens, loss near 11, where Adam magnifies rounding most): see tests/fleet/test_grouped.py.
FP32_RELATIVE, FP32_ENTRY = 1e-3, 1e-3
# bf16 against float32, and a bf16 group against bf16 alone, as relative L2 distance: on the CPU these jobs
# measured 3.4% to 7.0% and 2.7% to 6.2% (more for fewer steps: Adam's first steps magnify rounding). Bounds at
# about twice.
BF16_VS_FP32, BF16_GROUP_VS_ALONE = 0.15, 0.15


def trainer(device: str, train_dtype: str = "fp32") -> LocalTrainer:
    model = wrap_with_lora(load_base_model("builtin"), LORA, seed=0)
    return LocalTrainer(model, replace(SETTINGS, train_dtype=train_dtype), adapter_layout(model, LORA), device)


def starts(n: int) -> list[torch.Tensor]:
    base = get_flat(wrap_with_lora(load_base_model("builtin"), LORA, seed=0))
    return [base + 0.01 * torch.randn(base.shape, generator=torch.Generator().manual_seed(i)) for i in range(n)]


def jobs() -> list[TrainJob]:
    return [TrainJob(0, 0, 2, 1, 4), TrainJob(1, 1, 2, 1, 2, prox_mu=0.1), TrainJob(2, 2, 2, 1, 4, rank=2),
            TrainJob(3, 3, 2, 1, 3, poison=True)]


def relative(x: torch.Tensor, reference: torch.Tensor) -> float:
    return float((x - reference).norm() / reference.norm())


def assert_float32_close(x: torch.Tensor, reference: torch.Tensor) -> None:
    assert relative(x, reference) < FP32_RELATIVE
    assert float((x - reference).abs().max()) < FP32_ENTRY


def test_a_group_on_cuda_equals_each_client_alone_on_cuda_and_on_cpu(texts):
    gpu, cpu = trainer("cuda"), trainer("cpu")
    begin = starts(4)
    together = GroupedTrainer(gpu).train(jobs(), begin, texts)
    for job, start, text, result in zip(jobs(), begin, texts, together):
        assert result.delta.device.type == "cpu" and result.delta.dtype == torch.float32
        alone, on_cpu = gpu.train(job, start, text), cpu.train(job, start, text)
        assert_float32_close(result.delta, alone.delta)
        assert_float32_close(alone.delta, on_cpu.delta)
        assert alone.loss_first == pytest.approx(on_cpu.loss_first, rel=1e-5)
        assert result.loss_last == pytest.approx(alone.loss_last, rel=1e-4)


def test_bf16_on_cuda_is_close_to_float32(texts):
    exact, rounded = trainer("cpu"), trainer("cuda", "bf16")
    begin = starts(4)
    together = GroupedTrainer(rounded).train(jobs(), begin, texts)
    for job, start, text, result in zip(jobs(), begin, texts, together):
        alone = rounded.train(job, start, text)
        assert alone.delta.dtype == torch.float32
        assert relative(alone.delta, exact.train(job, start, text).delta) < BF16_VS_FP32
        assert relative(result.delta, alone.delta) < BF16_GROUP_VS_ALONE


def test_evaluation_on_cuda_matches_the_cpu(texts):
    held_out = windows(texts[3], np.arange(0, 80, 7), SETTINGS.seq_len + 1)
    adapter = starts(1)[0]
    assert trainer("cuda").evaluate(adapter, held_out) == pytest.approx(trainer("cpu").evaluate(adapter, held_out),
                                                                         rel=1e-5)
    scores = trainer("cuda").score(adapter, [texts[0][:20], texts[2]])
    np.testing.assert_allclose(scores, trainer("cpu").score(adapter, [texts[0][:20], texts[2]]), rtol=1e-5)


def test_a_run_with_workers_sharing_the_gpu_trains_there(tmp_path, ray_local):
    from scenarios.loader import load_scenario
    from scenarios.runner import RunOptions, run_scenario

    scenario = load_scenario("quickstart", [
        "fleet.size=60", "run.rounds=2", "run.clients_per_round=6", "run.deadline_s=600", "training.local_steps=2",
        "data.eval_windows=16", "output.report=false", "runtime.workers=2", "runtime.gpus_per_worker=0.5",
        "runtime.group_size=auto", "runtime.train_dtype=bf16"])
    run = run_scenario(scenario, RunOptions(out=tmp_path / "run", progress=False))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["worker_peak_cuda_mb"] > 0  # the workers' tensors were on the GPU
    assert summary["final_eval_loss"] < summary["base_eval_loss"]
