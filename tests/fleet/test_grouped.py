"""Grouped training: each client's update trained in a group equals the one it gets trained alone, for
every kind of job a strategy family sends (plain, proximal, personal and frozen parts, heterogeneous ranks,
bottleneck adapters, poisoned data, partial work), to float32 rounding."""

import pytest
import torch

from aggregation.partial import FEDSA_LORA, FFA_LORA, PWFF
from fleet.base_model import load_base_model
from fleet.grouped import GroupedLoraLinear, GroupedTrainer
from fleet.trainer import LocalTrainer, LoraSpec, TrainJob, TrainSettings, adapter_layout, get_flat, wrap_with_lora

SETTINGS = TrainSettings(seed=0, batch_size=4, seq_len=32, lr=1e-2, weight_decay=0.01)
ALL = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# Float32 sums taken in another order: batched products, and each adapted layer's two input gradients (base
# and LoRA) summed inside its own backward where autograd sums all six of q, k and v's at once. The gradients
# then differ by rounding, about 1e-7, and three Adam steps of lr 1e-2 carry that to about 1e-5 of the update's
# norm (largest measured 7.1e-5, in the PWFF case). Adam divides by the root of the squared gradient, so an
# entry whose gradient is near zero turns a rounding difference into one of up to lr per step (largest
# measured 1.5e-4). The products themselves are exact: test_grouped_lora_linear_is_exact checks them in
# float64.
ATOL, RTOL, NORM = 5e-4, 1e-2, 2e-4


def trainers(lora: LoraSpec):
    model = wrap_with_lora(load_base_model("builtin"), lora, seed=0)
    local = LocalTrainer(model, SETTINGS, adapter_layout(model, lora))
    return local, GroupedTrainer(local)


def starts(local: LocalTrainer, n: int) -> list[torch.Tensor]:
    """Distinct start adapters: the initial one moved a little per client (B is zero at the start)."""
    base = get_flat(local.model)
    return [base + 0.01 * torch.randn(base.shape, generator=torch.Generator().manual_seed(i)) for i in range(n)]


def assert_same(local: LocalTrainer, grouped: GroupedTrainer, jobs, texts, base_delta=None):
    begin = starts(local, len(jobs))
    together = grouped.train(jobs, begin, texts[: len(jobs)], base_delta)
    for job, start, text, result in zip(jobs, begin, texts, together):
        alone = local.train(job, start, text, base_delta)
        assert result.job == job and result.num_samples == alone.num_samples
        torch.testing.assert_close(result.delta, alone.delta, atol=ATOL, rtol=RTOL)
        assert (result.delta - alone.delta).norm() <= NORM * alone.delta.norm()
        assert result.loss_first == pytest.approx(alone.loss_first, rel=1e-5)
        assert result.loss_last == pytest.approx(alone.loss_last, rel=1e-4)
        assert result.delta.abs().max() > 1e-4  # it trained


def job(client: int, steps: int = 3, **kwargs) -> TrainJob:
    return TrainJob(client=client, data_client=client, round=2, base_version=1, steps=steps, **kwargs)


def test_plain_and_proximal_jobs_fedavg_fedprox(texts):
    local, grouped = trainers(LoraSpec(r=4, alpha=8.0, dropout=0.0, target_modules=ALL))
    assert_same(local, grouped, [job(0), job(1, prox_mu=0.5), job(2), job(3, prox_mu=0.1)], texts)


def test_partial_work_and_poisoned_data(texts):
    local, grouped = trainers(LoraSpec(r=4, alpha=8.0, dropout=0.0, target_modules=("q_proj", "v_proj")))
    assert_same(local, grouped, [job(0, steps=1), job(1, steps=4), job(2, steps=2, poison=True)], texts)


@pytest.mark.parametrize("groups", [FEDSA_LORA, FFA_LORA], ids=["fedsa_lora", "ffa_lora"])
def test_personal_and_frozen_parts(texts, groups):
    local, grouped = trainers(LoraSpec(r=4, alpha=8.0, dropout=0.0, target_modules=("q_proj", "v_proj")))
    assert_same(local, grouped, [job(0, groups=groups), job(1, groups=groups)], texts)


def test_heterogeneous_ranks_hetlora_flexlora(texts):
    local, grouped = trainers(LoraSpec(r=8, alpha=16.0, dropout=0.0, target_modules=("q_proj", "v_proj")))
    assert_same(local, grouped, [job(0, rank=2), job(1, rank=8), job(2, rank=4)], texts)
    result = grouped.train([job(0, rank=2)], starts(local, 1), texts[:1])[0]
    assert (result.delta[local.layout.beyond_rank(2)] == 0).all()


def test_bottleneck_adapters_pwff(texts):
    local, grouped = trainers(LoraSpec(r=4, alpha=8.0, dropout=0.0, target_modules=("q_proj", "v_proj"),
                                       bottleneck=8))
    assert_same(local, grouped, [job(0, groups=PWFF, prox_mu=0.2), job(1, groups=PWFF, prox_mu=0.2)], texts)


def test_merged_base_flora(texts):
    local, grouped = trainers(LoraSpec(r=4, alpha=8.0, dropout=0.0, target_modules=("q_proj", "v_proj")))
    dense = sum(b * a for b, a in local.layout.dense_shapes())
    base_delta = 0.01 * torch.randn(dense, generator=torch.Generator().manual_seed(7))
    assert_same(local, grouped, [job(0), job(1)], texts, base_delta)


def test_a_group_leaves_the_model_as_it_was(texts):
    local, grouped = trainers(LoraSpec(r=4, alpha=8.0, dropout=0.0, target_modules=("q_proj", "v_proj"),
                                       bottleneck=8))
    before = {n: p.detach().clone() for n, p in local.model.named_parameters()}
    grouped.train([job(0), job(1)], starts(local, 2), texts[:2])
    for name, p in local.model.named_parameters():
        assert torch.equal(p, before[name]), name
    assert not any("forward" in vars(m) for m in local.model.modules())  # the stacks are gone again


def test_dropout_draws_each_clients_own_masks(texts):
    local, grouped = trainers(LoraSpec(r=4, alpha=8.0, dropout=0.3, target_modules=("q_proj", "v_proj")))
    begin = starts(local, 2)
    first = grouped.train([job(0), job(1)], begin, texts[:2])
    again = grouped.train([job(1)], begin[1:], texts[1:2])  # client 1 alone draws the same masks
    torch.testing.assert_close(first[1].delta, again[0].delta, atol=ATOL, rtol=RTOL)
    plain = grouped.train([job(1, prox_mu=0.0)], begin[1:], texts[1:2])
    assert torch.equal(plain[0].delta, again[0].delta)


@pytest.mark.parametrize("x_grad", [True, False], ids=["inner_layer", "first_layer"])
def test_grouped_lora_linear_is_exact(x_grad):
    """The grouped layer's forward, written out per client, and its hand-written backward against finite
    differences (torch.autograd.gradcheck), in float64. A first block's input (the frozen embedding's output)
    needs no gradient, and gets none."""
    g, batch, t, d_in, d_out, r, scaling = 3, 2, 5, 4, 6, 2, 1.5
    rng = torch.Generator().manual_seed(0)
    x = torch.randn(g * batch, t, d_in, dtype=torch.float64, generator=rng).requires_grad_(x_grad)
    weight = torch.randn(d_out, d_in, dtype=torch.float64, generator=rng)
    bias = torch.randn(d_out, dtype=torch.float64, generator=rng)
    a = torch.randn(g, r, d_in, dtype=torch.float64, generator=rng).requires_grad_()
    b = torch.randn(g, d_out, r, dtype=torch.float64, generator=rng).requires_grad_()
    y = GroupedLoraLinear.apply(x, weight, bias, a, b, scaling)
    for k in range(g):  # client k's rows are the k-th block of `batch` sequences
        rows = x[k * batch : (k + 1) * batch]
        expected = rows @ weight.T + bias + scaling * (rows @ a[k].T) @ b[k].T
        torch.testing.assert_close(y[k * batch : (k + 1) * batch], expected, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(GroupedLoraLinear.apply, (x, weight, bias, a, b, scaling))
    y.sum().backward()
    assert (x.grad is not None) == x_grad
