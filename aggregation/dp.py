"""DP-FedAvg with fixed clipping (McMahan et al., "Learning Differentially Private Recurrent Language
Models", ICLR 2018).

Rule, with clip norm S, noise multiplier z, expected cohort size K (context.cohort) and server rate eta:

    clip(Delta_k) = Delta_k * min(1, S / ||Delta_k||_2)
    Delta_t       = (sum_k clip(Delta_k) + N(0, (z S)^2 I)) / K
    x_{t+1}       = x_t + eta * Delta_t

The sum is unweighted and divided by the expected K, not by the number that arrived: this is the paper's
fixed-denominator estimator, whose sensitivity to one client is S / K whatever the cohort turns out to be.
Each client contributes at most S, so the Gaussian sum is a sampled Gaussian mechanism with noise
multiplier z. Privacy is accounted with Renyi DP (dp_accounting.rdp.RdpAccountant), composing one
PoissonSampledDpEvent(q, GaussianDpEvent(z)) per aggregation with q = K / N; `metrics()` reports epsilon
at the target delta, and `accounting()` what the accountant assumed.

N (context.population) is the number of devices that can be invited: those with the memory to train and
some availability. A device that can never be selected gives no privacy amplification, so counting it
would lower q and understate epsilon. The accountant assumes Poisson sampling of clients; the emulator
selects a fixed-size cohort (with over-selection and deadline losses), so epsilon is the usual
approximation made for fixed-size cohorts, not a proof for the emulated selection.

clipping = "server": the server clips every delta (Flower's DifferentialPrivacyServerSideFixedClipping).
clipping = "client": the trainer clips (`client_clip`) before upload, so the server never sees an
unclipped delta (Flower's DifferentialPrivacyClientSideFixedClipping). The server still checks the norms
and rejects the round if any update exceeds S, because an unclipped update voids the privacy guarantee.
Either way the server adds the noise. Noise goes only on the shared entries (partial aggregation): frozen
entries, such as FFA-LoRA's A, keep their initial value, and no client sends anything for them.

Client duties: with clipping = "client" (ClientConfig.clip_norm = S), send client_clip(Delta_k, S), and
send it as it is: a lossy codec with error feedback can push the norm back above S. With "server", none.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import dp_accounting
import torch
from dp_accounting.rdp import RdpAccountant

from aggregation.base import (
    AggregationError,
    ClientConfig,
    ClientUpdate,
    RunSetting,
    Strategy,
    StrategyContext,
    stack_deltas,
)
from aggregation.registry import param, register_strategy

#: How the accountant models client selection, next to how the emulator selects (a fixed-size cohort).
SAMPLING_ASSUMPTION = "poisson (approximation of fixed-size cohorts)"

NORM_TOLERANCE = 1e-5  # relative slack on ||Delta_k|| <= S for client clipping: float32 rounding of the scaled delta


def client_clip(delta: torch.Tensor, clip_norm: float) -> torch.Tensor:
    """Delta * min(1, S / ||Delta||_2): what a trainer sends under clipping = "client"."""
    norm = float(torch.linalg.vector_norm(delta.double()))
    return delta if norm <= clip_norm else delta * (clip_norm / norm)


def epsilon(q: float, z: float, steps: int, delta: float) -> float:
    """Epsilon at `delta` after `steps` rounds of the Poisson-sampled Gaussian mechanism (RDP accountant)."""
    accountant = RdpAccountant()
    if steps > 0:
        accountant.compose(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)), steps)
    return float(accountant.get_epsilon(delta))


def noise_generator(seed: int, version: int, salt: str) -> torch.Generator:
    """A generator for one aggregation, derived from (run seed, version) without Python's salted hash."""
    digest = hashlib.blake2b(f"{salt}/{seed}/{version}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)


@dataclass(frozen=True)
class DPFedAvgConfig:
    clip_norm: float = param(1.0, "S: the L2 norm every delta is clipped to, > 0")
    noise_multiplier: float = param(1.0, "z: Gaussian noise of standard deviation z S on the sum, >= 0")
    clipping: str = param("server", "who clips: 'server' (every delta it receives) or 'client' (before upload)")
    delta: float = param(1e-5, "the delta at which epsilon is reported, in (0, 1)")
    server_lr: float = param(1.0, "server learning rate eta, > 0")

    def __post_init__(self) -> None:
        if not self.clip_norm > 0:
            raise ValueError(f"clip_norm must be > 0, got {self.clip_norm}")
        if not self.noise_multiplier >= 0:
            raise ValueError(f"noise_multiplier must be >= 0, got {self.noise_multiplier}")
        if self.clipping not in ("server", "client"):
            raise ValueError(f"clipping must be 'server' or 'client', got {self.clipping!r}")
        if not 0 < self.delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {self.delta}")
        if not self.server_lr > 0:
            raise ValueError(f"server_lr must be > 0, got {self.server_lr}")


@register_strategy
class DPFedAvg(Strategy):
    name = "dp_fedavg"
    config_class = DPFedAvgConfig
    state_attrs = ("rounds", "_clipped")

    def objections(self, setting: RunSetting) -> list[tuple[str, str]]:
        found = super().objections(setting)
        if self.config.clipping == "client" and setting.compression not in (None, "none"):
            found.append(("strategy.compression", "error feedback can push a client's upload past its clip "
                                                  "norm; use clipping 'server' or compression 'none'"))
        return found

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        if not 1 <= context.cohort <= context.population:
            raise ValueError(f"dp_fedavg needs 1 <= cohort <= population (devices that can be invited), got "
                             f"cohort {context.cohort} and population {context.population}")
        self.q = context.cohort / context.population
        noise = dp_accounting.GaussianDpEvent(self.config.noise_multiplier)
        self._event = dp_accounting.PoissonSampledDpEvent(self.q, noise)
        self._accountant = RdpAccountant()
        self._shared = self.groups.masks(context.layout)[0]  # frozen and personal entries get no noise
        self.rounds = 0
        self._clipped = 0.0

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self._accountant = RdpAccountant()  # privacy spent so far: one event per step taken
        if self.rounds:
            self._accountant.compose(self._event, self.rounds)

    def configure(self, client: int, version: int) -> ClientConfig:
        return ClientConfig(clip_norm=self.config.clip_norm if self.config.clipping == "client" else 0.0)

    def aggregate(self, global_adapter: torch.Tensor, version: int, updates: list[ClientUpdate]) -> torch.Tensor:
        deltas, _ = stack_deltas(updates)  # the weights are not used: every client counts S at most
        S, z = self.config.clip_norm, self.config.noise_multiplier
        norms = torch.linalg.vector_norm(deltas.double(), dim=1)
        if self.config.clipping == "client":
            over = [u.client for u, n in zip(updates, norms.tolist()) if n > S * (1 + NORM_TOLERANCE)]
            if over:
                raise AggregationError(f"clients {over} sent updates with L2 norm above clip_norm {S} "
                                       f"under client-side clipping")
            # A delta the client had to clip sits on the sphere ||Delta|| = S.
            self._clipped = float((norms >= S * (1 - NORM_TOLERANCE)).double().mean())
        else:
            self._clipped = float((norms > S).double().mean())
        factor = torch.clamp(S / norms, max=1.0).to(deltas.dtype)  # norm 0 gives inf, clamped to 1
        total = factor @ deltas
        g = noise_generator(self.context.seed, version, self.name)
        noise = torch.randn(total.shape, generator=g, dtype=torch.float64) * (z * S) * self._shared
        Delta_t = (total.double() + noise) / self.context.cohort
        self._accountant.compose(self._event)
        self.rounds += 1
        return global_adapter + (self.config.server_lr * Delta_t).to(global_adapter.dtype)

    def metrics(self) -> dict[str, float]:
        return {"epsilon": float(self._accountant.get_epsilon(self.config.delta)), "clipped": self._clipped}

    def accounting(self) -> dict[str, float | int | str]:
        """What the accountant assumed, flat, for a run's summary: a reader can recompute epsilon from it."""
        return {
            "dp_population": self.context.population,  # devices that can be invited
            "dp_cohort": self.context.cohort,
            "dp_sampling_rate": self.q,
            "dp_sampling": SAMPLING_ASSUMPTION,
            "dp_noise_multiplier": self.config.noise_multiplier,
            "dp_delta": self.config.delta,
            "dp_rounds": self.rounds,
        }
