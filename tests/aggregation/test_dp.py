"""DP-FedAvg: clipping, noise scale, fixed denominator and privacy accounting."""

import math

import dp_accounting
import numpy as np
import pytest
import torch
from dp_accounting.rdp import RdpAccountant

from aggregation import (AdapterLayout, AggregationError, ClientUpdate, ParameterGroups, StrategyContext,
                         build_strategy)
from aggregation.dp import client_clip, epsilon


def layout(p):
    return AdapterLayout.from_shapes([("x.lora_A.default.weight", (1, p))], rank=1, scaling=1.0)


def update(client, delta, n=1):
    return ClientUpdate(client=client, delta=torch.tensor(delta, dtype=torch.float32), num_samples=n,
                        base_version=0, steps=1)


def strategy(p, cohort=1, population=1, seed=0, **params):
    s = build_strategy("dp_fedavg", **params)
    s.setup(StrategyContext(layout=layout(p), population=population, cohort=cohort, seed=seed))
    return s


def test_clipping_and_fixed_denominator_without_noise():
    s = strategy(2, cohort=4, population=100, noise_multiplier=0.0, clip_norm=1.0)
    # (3, 4) has norm 5 -> (0.6, 0.8); (0.3, 0) is inside the ball. Unweighted sum over the expected 4,
    # although only 2 arrived and their sample counts differ.
    out = s.aggregate(torch.ones(2), 0, [update(0, [3.0, 4.0], n=1), update(1, [0.3, 0.0], n=99)])
    assert torch.allclose(out, torch.tensor([1.0 + 0.9 / 4, 1.0 + 0.8 / 4]))
    assert s.metrics()["clipped"] == 0.5


def test_clipped_updates_are_bounded_by_the_clip_norm():
    torch.manual_seed(1)
    deltas = [torch.randn(50) * scale for scale in (0.01, 0.1, 1.0, 10.0)]
    s = strategy(50, cohort=1, noise_multiplier=0.0, clip_norm=0.5)
    for k, d in enumerate(deltas):
        step = s.aggregate(torch.zeros(50), 0, [update(k, d.tolist())])
        norm = float(step.norm())
        assert norm <= 0.5 * (1 + 1e-6)
        if float(d.norm()) > 0.5:
            assert norm == pytest.approx(0.5, rel=1e-6)
            assert torch.allclose(step / norm, d / d.norm(), atol=1e-6)  # direction kept
        else:
            assert torch.allclose(step, d)


def test_noise_std_is_z_s_over_cohort():
    p, z, S, K = 100_000, 1.3, 0.7, 5
    s = strategy(p, cohort=K, population=50, noise_multiplier=z, clip_norm=S, server_lr=1.0)
    out = s.aggregate(torch.zeros(p), 3, [update(0, [0.0] * p)])
    assert float(out.std()) == pytest.approx(z * S / K, rel=0.02)
    assert abs(float(out.mean())) < 5 * z * S / K / math.sqrt(p)
    # Reproducible from (seed, version), different for another version or seed.
    again = strategy(p, cohort=K, population=50, noise_multiplier=z, clip_norm=S)
    assert torch.equal(again.aggregate(torch.zeros(p), 3, [update(0, [0.0] * p)]), out)
    other_version = again.aggregate(torch.zeros(p), 4, [update(0, [0.0] * p)])
    other_seed = strategy(p, cohort=K, population=50, seed=1, noise_multiplier=z, clip_norm=S)
    assert abs(float(np.corrcoef(out.numpy(), other_version.numpy())[0, 1])) < 0.02
    assert not torch.equal(other_seed.aggregate(torch.zeros(p), 3, [update(0, [0.0] * p)]), out)


def test_noise_only_on_shared_entries():
    lay = AdapterLayout.from_shapes([("m.lora_A.default.weight", (2, 50)), ("m.lora_B.default.weight", (50, 2))],
                                    rank=2, scaling=1.0)
    s = build_strategy("dp_fedavg")
    s.groups = ParameterGroups(frozen=(r"\.lora_A\.",))  # FFA-LoRA: A frozen at its initial value
    s.setup(StrategyContext(layout=lay, population=10, cohort=2))
    x = torch.randn(200)
    out = s.aggregate(x, 0, [update(0, [0.0] * 200)])
    assert torch.equal(out[:100], x[:100])
    assert float((out[100:] - x[100:]).std()) > 0.2  # z S / K = 0.5


def test_server_learning_rate_scales_the_noisy_step():
    a = strategy(1000, cohort=2, population=10)
    b = strategy(1000, cohort=2, population=10, server_lr=0.25)
    ups = [update(0, [0.01] * 1000), update(1, [-0.02] * 1000)]
    assert torch.allclose(b.aggregate(torch.zeros(1000), 7, ups), 0.25 * a.aggregate(torch.zeros(1000), 7, ups))


def test_client_clipping_is_verified_by_the_server():
    s = strategy(2, cohort=2, population=10, noise_multiplier=0.0, clipping="client")
    assert s.configure(3, 0).clip_norm == 1.0  # the trainer's duty
    assert strategy(2).configure(3, 0).clip_norm == 0.0
    with pytest.raises(AggregationError, match=r"clients \[4\]"):
        s.aggregate(torch.zeros(2), 0, [update(3, [0.1, 0.1]), update(4, [0.0, 1.1])])
    clipped = client_clip(torch.tensor([3.0, 4.0]), 1.0)
    assert torch.allclose(clipped, torch.tensor([0.6, 0.8]))
    assert torch.equal(client_clip(torch.tensor([0.3, 0.4]), 1.0), torch.tensor([0.3, 0.4]))
    out = s.aggregate(torch.zeros(2), 0, [update(3, [0.1, 0.1]), update(4, clipped.tolist())])
    assert torch.allclose(out, torch.tensor([0.35, 0.45]))
    assert s.metrics()["clipped"] == 0.5  # one delta on the sphere: the client clipped it
    # The same deltas clipped by the server give the same step.
    server = strategy(2, cohort=2, population=10, noise_multiplier=0.0)
    assert torch.allclose(server.aggregate(torch.zeros(2), 0, [update(3, [0.1, 0.1]), update(4, [3.0, 4.0])]), out)


def test_epsilon_matches_dp_accounting_and_grows_with_rounds():
    K, N, z, delta = 10, 1000, 1.1, 1e-5
    s = strategy(4, cohort=K, population=N, noise_multiplier=z, delta=delta)
    assert s.metrics()["epsilon"] == 0.0
    eps = []
    for t in range(4):
        s.aggregate(torch.zeros(4), t, [update(0, [0.1, 0.0, 0.0, 0.0])])
        eps.append(s.metrics()["epsilon"])
    direct = RdpAccountant()
    direct.compose(dp_accounting.PoissonSampledDpEvent(K / N, dp_accounting.GaussianDpEvent(z)), 4)
    assert eps[-1] == pytest.approx(direct.get_epsilon(delta), rel=1e-12)
    assert eps[-1] == pytest.approx(epsilon(K / N, z, 4, delta), rel=1e-12)
    assert all(a < b for a, b in zip(eps, eps[1:]))


def log_moment(q: float, z: float, alpha: int) -> float:
    """log A_alpha of the Poisson-sampled Gaussian mechanism at an integer order, by the binomial expansion of
    Mironov, Talwar and Zhang (2019), "Renyi Differential Privacy of the Sampled Gaussian Mechanism", sec. 3.3:
    A_alpha = sum_k C(alpha, k) (1 - q)^(alpha - k) q^k exp((k^2 - k) / (2 z^2)); RDP(alpha) = log A / (alpha - 1).
    Summed in log space: the terms overflow a float for large orders."""
    terms = [math.lgamma(alpha + 1) - math.lgamma(k + 1) - math.lgamma(alpha - k + 1)
             + (alpha - k) * math.log1p(-q) + k * math.log(q) + (k * k - k) / (2 * z * z) for k in range(alpha + 1)]
    top = max(terms)
    return top + math.log(sum(math.exp(t - top) for t in terms))


def reference_epsilon(q: float, z: float, steps: int, delta: float, tight: bool) -> float:
    """Epsilon over integer orders 2..63 from the hand-written RDP above. tight=False: the classic conversion
    eps = RDP + log(1 / delta) / (alpha - 1) (Mironov 2017, Prop. 3), the one the published figures used;
    tight=True: that of Balle et al. (2020), eps = RDP + log((alpha - 1) / alpha) - (log delta + log alpha) /
    (alpha - 1), which dp_accounting applies."""
    best = math.inf
    for alpha in range(2, 64):
        rdp = steps * log_moment(q, z, alpha) / (alpha - 1)
        if tight:
            eps = rdp + math.log((alpha - 1) / alpha) - (math.log(delta) + math.log(alpha)) / (alpha - 1)
        else:
            eps = rdp + math.log(1 / delta) / (alpha - 1)
        best = min(best, eps)
    return best


# (q, z, steps, delta, published epsilon), all computed with the classic conversion:
PUBLISHED = [
    # Abadi et al. (2016), "Deep Learning with Differential Privacy", sec. 3.1: q = 0.01, sigma = 4,
    # delta = 1e-5, T = 10,000 steps give eps about 1.26 with the moments accountant.
    (0.01, 4.0, 10_000, 1e-5, 1.26),
    # TensorFlow Privacy, tutorials/README.md (MNIST DP-SGD): N = 60,000, batch 256, noise 1.1, 60 epochs
    # (ceil(60 x 60000 / 256) = 14,063 steps), delta = 1e-5: eps = 3.01; noise 1.3, 15 epochs: eps = 1.19.
    (256 / 60_000, 1.1, 14_063, 1e-5, 3.01),
    (256 / 60_000, 1.3, 3_516, 1e-5, 1.19),
]


@pytest.mark.parametrize("q, z, steps, delta, published", PUBLISHED)
def test_hand_written_rdp_reproduces_published_epsilons(q, z, steps, delta, published):
    # Checks the reference of the next test: the published figures are given to two decimals.
    assert reference_epsilon(q, z, steps, delta, tight=False) == pytest.approx(published, abs=0.005)


@pytest.mark.parametrize("q, z, steps, delta, published", PUBLISHED)
def test_accountant_matches_the_hand_written_rdp(q, z, steps, delta, published):
    # Same orders' RDP, same conversion: within 0.1% (the accountant also tries fractional orders, which can
    # only lower epsilon). The tighter conversion gives less than the published, classic, figure.
    eps = epsilon(q, z, steps, delta)
    assert eps == pytest.approx(reference_epsilon(q, z, steps, delta, tight=True), rel=1e-3)
    assert eps < published


def test_a_smaller_invitable_population_spends_more_privacy():
    # A fleet of 1000 devices of which 400 can be invited (memory, availability), cohort 20, z = 2,
    # 200 rounds, delta 1e-5. By the hand-written RDP: eps about 0.638 over 1000 devices (q = 0.02), about
    # 1.72 over the 400 that can be invited (q = 0.05): counting devices that are never invited would
    # understate epsilon 2.7 times.
    spent = {}
    for population in (1000, 400):
        s = strategy(4, cohort=20, population=population, noise_multiplier=2.0, delta=1e-5)
        for t in range(200):
            s.aggregate(torch.zeros(4), t, [update(0, [0.1, 0.0, 0.0, 0.0])])
        spent[population] = s.metrics()["epsilon"]
        reference = reference_epsilon(20 / population, 2.0, 200, 1e-5, tight=True)
        assert spent[population] == pytest.approx(reference, rel=2e-3)
    assert spent[400] == pytest.approx(1.72, abs=0.01) and spent[1000] == pytest.approx(0.638, abs=0.001)


def test_accounting_states_what_the_accountant_assumed():
    s = strategy(4, cohort=20, population=400, noise_multiplier=2.0, delta=1e-6)
    s.aggregate(torch.zeros(4), 0, [update(0, [0.1, 0.0, 0.0, 0.0])])
    assumed = s.accounting()
    assert assumed == {"dp_population": 400, "dp_cohort": 20, "dp_sampling_rate": 0.05,
                       "dp_sampling": "poisson (approximation of fixed-size cohorts)", "dp_noise_multiplier": 2.0,
                       "dp_delta": 1e-6, "dp_rounds": 1}
    # Enough to recompute the reported epsilon.
    again = epsilon(assumed["dp_sampling_rate"], assumed["dp_noise_multiplier"], assumed["dp_rounds"],
                    assumed["dp_delta"])
    assert again == s.metrics()["epsilon"]


def test_epsilon_falls_with_noise_and_rises_with_sampling_rate():
    assert epsilon(0.01, 2.0, 100, 1e-5) < epsilon(0.01, 1.0, 100, 1e-5)
    assert epsilon(0.01, 1.0, 100, 1e-5) < epsilon(0.05, 1.0, 100, 1e-5)
    assert epsilon(0.01, 1.0, 100, 1e-5) < epsilon(0.01, 1.0, 100, 1e-7)  # a smaller delta costs more
    assert epsilon(0.01, 1.0, 0, 1e-5) == 0.0


def test_full_participation_matches_the_gaussian_rdp_bound():
    # q = 1: T Gaussian mechanisms have RDP T a / (2 z^2); the conversion of Balle et al. (2020) gives
    # eps(a) = T a / (2 z^2) + log((a - 1) / a) - (log delta + log a) / (a - 1). Its minimum over a fine
    # grid of orders is a lower bound for the accountant (which minimises over fewer orders) and close to it.
    T, z, delta = 50, 3.0, 1e-5
    a = np.linspace(1.01, 200, 400_000)
    bound = float(np.min(T * a / (2 * z**2) + np.log((a - 1) / a) - (np.log(delta) + np.log(a)) / (a - 1)))
    eps = epsilon(1.0, z, T, delta)
    assert bound * (1 - 1e-9) <= eps <= bound * 1.01


def test_parameter_and_context_errors():
    with pytest.raises(ValueError, match="clip_norm"):
        build_strategy("dp_fedavg", clip_norm=0.0)
    with pytest.raises(ValueError, match="noise_multiplier"):
        build_strategy("dp_fedavg", noise_multiplier=-1.0)
    with pytest.raises(ValueError, match="clipping"):
        build_strategy("dp_fedavg", clipping="device")
    with pytest.raises(ValueError, match="delta"):
        build_strategy("dp_fedavg", delta=1.0)
    with pytest.raises(ValueError, match="server_lr"):
        build_strategy("dp_fedavg", server_lr=0.0)
    with pytest.raises(ValueError, match=r"population \(devices that can be invited\)"):
        strategy(2, cohort=20, population=10)
    with pytest.raises(AggregationError, match="no client update"):
        strategy(2).aggregate(torch.zeros(2), 0, [])
