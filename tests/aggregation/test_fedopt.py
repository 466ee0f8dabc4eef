"""FedAdam, FedYogi, FedAdagrad: two server steps worked out by hand (numpy only for the last arithmetic)."""

import numpy as np
import pytest
import torch

import aggregation.fedopt  # noqa: F401  (registers "fedadam", "fedyogi", "fedadagrad")
from aggregation import AdapterLayout, ClientUpdate, StrategyContext, build_strategy
from aggregation.registry import strategy_parameters

LAYOUT = AdapterLayout.from_shapes(
    [("x.lora_A.default.weight", (1, 2)), ("x.lora_B.default.weight", (1, 1))], rank=1, scaling=1.0
)


def update(client, delta, n=1):
    return ClientUpdate(client=client, delta=torch.tensor(delta), num_samples=n, base_version=0, steps=1)


def built(name, **params):
    strategy = build_strategy(name, **params)
    strategy.setup(StrategyContext(layout=LAYOUT))
    return strategy


@pytest.mark.parametrize(
    "name, eta, tau",
    [("fedadam", 0.1, 1e-9), ("fedyogi", 0.01, 1e-3), ("fedadagrad", 0.1, 1e-9)],
)
def test_defaults_follow_flower(name, eta, tau):
    assert strategy_parameters(name) == {"server_lr": eta, "beta_1": 0.9, "beta_2": 0.99, "tau": tau}
    strategy = built(name)
    c = strategy.config
    assert (c.server_lr, c.beta_1, c.beta_2, c.tau) == (eta, 0.9, 0.99, tau)


def test_fedadam_two_steps():
    s = built("fedadam")
    x0 = torch.zeros(3)
    # D_1 = (2, -1, 0): m_1 = (0.2, -0.1, 0), v_1 = (0.04, 0.01, 0): the first step is eta sign(D_1)
    x1 = s.aggregate(x0, 0, [update(0, [2.0, -1.0, 0.0])])
    assert torch.allclose(s.m_t, torch.tensor([0.2, -0.1, 0.0]))
    assert torch.allclose(s.v_t, torch.tensor([0.04, 0.01, 0.0]))
    assert torch.allclose(x1, torch.tensor([0.1, -0.1, 0.0]), atol=1e-6)
    # D_2 = 0.25 (4, 4, 0) + 0.75 (0, 0, 4) = (1, 1, 3)
    x2 = s.aggregate(x1, 1, [update(0, [4.0, 4.0, 0.0], 1), update(1, [0.0, 0.0, 4.0], 3)])
    m2 = np.array([0.9 * 0.2 + 0.1, 0.9 * -0.1 + 0.1, 0.3])  # (0.28, 0.01, 0.3)
    v2 = np.array([0.99 * 0.04 + 0.01, 0.99 * 0.01 + 0.01, 0.09])  # (0.0496, 0.0199, 0.09)
    assert np.allclose(s.m_t.numpy(), m2) and np.allclose(s.v_t.numpy(), v2)
    assert np.allclose(x2.numpy(), np.array([0.1, -0.1, 0.0]) + 0.1 * m2 / (np.sqrt(v2) + 1e-9), atol=1e-6)


def test_fedyogi_two_steps_takes_both_signs():
    s = built("fedyogi")
    x1 = s.aggregate(torch.zeros(2), 0, [update(0, [2.0, -1.0])])
    # from v_0 = 0, sign(0 - D^2) = -1: v_1 = 0.01 D_1^2 = (0.04, 0.01), as Adam
    assert torch.allclose(s.v_t, torch.tensor([0.04, 0.01]))
    assert np.allclose(x1.numpy(), 0.01 * np.array([0.2 / 0.201, -0.1 / 0.101]), atol=1e-7)
    x2 = s.aggregate(x1, 1, [update(0, [0.1, 3.0])])
    # coordinate 0: v = 0.04 > D^2 = 0.01, v shrinks by 0.01 D^2 -> 0.0399 (Adam: 0.0397)
    # coordinate 1: v = 0.01 < D^2 = 9, v grows by 0.01 D^2 -> 0.1 (Adam: 0.0999)
    v2 = np.array([0.0399, 0.1])
    m2 = np.array([0.9 * 0.2 + 0.1 * 0.1, 0.9 * -0.1 + 0.1 * 3.0])  # (0.19, 0.21)
    assert np.allclose(s.v_t.numpy(), v2, rtol=1e-5) and np.allclose(s.m_t.numpy(), m2)
    assert np.allclose(x2.numpy(), x1.numpy() + 0.01 * m2 / (np.sqrt(v2) + 1e-3), atol=1e-7)


def test_fedadagrad_two_steps_sums_squares():
    s = built("fedadagrad")
    x1 = s.aggregate(torch.zeros(2), 0, [update(0, [2.0, -1.0])])
    # m_1 = (0.2, -0.1), v_1 = (4, 1): step 0.1 (0.1, -0.1)
    assert torch.allclose(x1, torch.tensor([0.01, -0.01]), atol=1e-7)
    x2 = s.aggregate(x1, 1, [update(0, [1.0, 1.0])])
    # m_2 = (0.28, 0.01), v_2 = (5, 2)
    assert torch.allclose(s.v_t, torch.tensor([5.0, 2.0]))
    expected = np.array([0.01, -0.01]) + 0.1 * np.array([0.28, 0.01]) / (np.sqrt([5.0, 2.0]) + 1e-9)
    assert np.allclose(x2.numpy(), expected, atol=1e-7)


@pytest.mark.parametrize("name", ["fedadam", "fedyogi", "fedadagrad"])
def test_untouched_coordinates_stay_put_and_setup_resets(name):
    s = built(name)
    ups = [update(0, [1.0, 0.0, -2.0])]
    first = s.aggregate(torch.ones(3), 0, ups)
    assert first[1] == 1.0  # 0 / (0 + tau): no NaN where nothing moved
    second = s.aggregate(first, 1, ups)
    assert not torch.equal(second - first, first - torch.ones(3))  # state carried over
    s.setup(StrategyContext(layout=LAYOUT))
    assert torch.equal(s.aggregate(torch.ones(3), 0, ups), first)


@pytest.mark.parametrize(
    "bad", [{"server_lr": 0.0}, {"beta_1": 1.0}, {"beta_2": -0.5}, {"tau": 0.0}, {"tau": float("inf")}]
)
@pytest.mark.parametrize("name", ["fedadam", "fedyogi", "fedadagrad"])
def test_invalid_parameters(name, bad):
    with pytest.raises(ValueError, match=f"{name}: {next(iter(bad))}"):
        build_strategy(name, **bad)


# The second step of the three tests above, as decimal literals worked out by hand (the tests above check
# m_2 and v_2 as literals but rebuild x_2 with the update formula). Default parameters (Flower's), x_0 = 0.
SECOND_STEP = [
    # FedAdam: x_1 = (0.1, -0.1, 0); m_2 = (0.28, 0.01, 0.3), v_2 = (0.0496, 0.0199, 0.09);
    # x_2 = x_1 + 0.1 m_2 / sqrt(v_2): 0.1 + 0.028 / 0.2227106 = 0.2257237, -0.1 + 0.001 / 0.1410674 = -0.0929112,
    # 0.03 / 0.3 = 0.1
    ("fedadam", [[2.0, -1.0, 0.0]], [[4.0, 4.0, 0.0], [0.0, 0.0, 4.0]], [1, 3],
     [0.2257237114, -0.0929111879, 0.1]),
    # FedYogi: x_1 = 0.01 (0.2 / 0.201, -0.1 / 0.101) = (0.0099502488, -0.0099009901); m_2 = (0.19, 0.21),
    # v_2 = (0.0399, 0.1); x_2 = x_1 + 0.01 m_2 / (sqrt(v_2) + 0.001):
    # 0.0099502488 + 0.0019 / 0.2007490 = 0.0194147642, -0.0099009901 + 0.0021 / 0.3172278 = -0.0032811408
    ("fedyogi", [[2.0, -1.0]], [[0.1, 3.0]], [1], [0.0194147642, -0.0032811408]),
    # FedAdagrad: x_1 = (0.01, -0.01); m_2 = (0.28, 0.01), v_2 = (5, 2);
    # x_2 = 0.01 + 0.028 / sqrt(5) = 0.0225219807, -0.01 + 0.001 / sqrt(2) = -0.0092928932
    ("fedadagrad", [[2.0, -1.0]], [[1.0, 1.0]], [1], [0.0225219807, -0.0092928932]),
]


@pytest.mark.parametrize("name, first, second, counts, expected", SECOND_STEP, ids=[c[0] for c in SECOND_STEP])
def test_second_step_against_decimal_literals(name, first, second, counts, expected):
    s = built(name)
    x1 = s.aggregate(torch.zeros(len(expected)), 0, [update(0, d) for d in first])
    x2 = s.aggregate(x1, 1, [update(k, d, n) for k, (d, n) in enumerate(zip(second, counts))])
    np.testing.assert_allclose(x2.numpy(), expected, rtol=1e-6, atol=0)
