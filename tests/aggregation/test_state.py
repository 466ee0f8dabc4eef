"""Every strategy saved between two server steps and loaded into a fresh copy steps on exactly as the one
that never stopped: same adapter, same metrics. The state goes through a real checkpoint file."""

import math

import pytest
import torch

from aggregation import AdapterLayout, ClientUpdate, StrategyContext, build_strategy, strategy_names
from analysis import checkpoint

CLIENTS = 6


def layout():
    shapes = []
    for i, (d_out, d_in) in enumerate([(3, 4), (2, 3)]):
        shapes += [(f"m{i}.lora_A.default.weight", (2, d_in)), (f"m{i}.lora_B.default.weight", (d_out, 2))]
    return AdapterLayout.from_shapes(shapes + [("head.weight", (5,))], rank=2, scaling=1.0)


def fresh(name):
    strategy = build_strategy(name)
    strategy.setup(StrategyContext(layout=layout(), population=100, cohort=CLIENTS, seed=7))
    return strategy


def step(strategy, x, version):
    """One server step: CLIENTS updates, some trained from the version before (stale), ranks 1 and 2; one
    more client is invited than reports (secure aggregation recovers its masks)."""
    g = torch.Generator().manual_seed(version)
    for c in range(CLIENTS + 1):
        strategy.configure(c, version)
    updates = [ClientUpdate(client=c, delta=0.1 * torch.randn(x.numel(), generator=g), num_samples=10 + c,
                            base_version=max(0, version - c % 2), steps=3, rank=1 + c % 2)
               for c in range(CLIENTS)]
    return strategy.aggregate(x, version, updates)


def same(a, b) -> bool:
    """Equal values, tensors and containers of them; NaN equals NaN. Other objects are not compared."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, (int, float, str, set, type(None))):
        return a == b
    return True


@pytest.mark.parametrize("name", strategy_names())
def test_a_restored_strategy_steps_on_as_if_never_stopped(name, tmp_path):
    running, restored = fresh(name), fresh(name)
    x = 0.1 * torch.randn(layout().size, generator=torch.Generator().manual_seed(99))
    for version in (0, 1):
        x = step(running, x, version)
    running.configure(CLIENTS + 1, 2)  # invited to a round of version 2 that was abandoned
    checkpoint.save(tmp_path / "c.safetensors", {"strategy": running.state_dict()})
    restored.load_state_dict(checkpoint.load(tmp_path / "c.safetensors")["strategy"])
    assert torch.equal(step(restored, x, 2), step(running, x, 2))
    assert same(restored.metrics(), running.metrics())
    assert same(vars(restored), vars(running))  # FLoRA's merged base, kept versions, moments, ...
    assert restored.download_values() == running.download_values()


def test_a_strategy_without_its_state_would_not_step_on_the_same():
    """The test above can fail: FedAvgM restored without its momentum steps differently."""
    running, forgetful = fresh("fedavgm"), fresh("fedavgm")
    x = torch.zeros(layout().size)
    for version in (0, 1):
        x = step(running, x, version)
    assert not torch.equal(step(forgetful, x, 2), step(running, x, 2))
