"""Which available devices the server invites to a round.

- uniform: every eligible device equally likely (FedAvg's default).
- resource: devices drawn with probability proportional to a score of battery charge, link quality and
  compute speed, each scaled to [0, 1] among the candidates, plus a floor so nobody is starved.
- oort: Oort's utility (Lai et al., OSDI 2021): statistical utility |B_i| sqrt(mean loss^2), here the
  client's samples times its last training loss, times a penalty (T / t_i)^alpha for devices whose last
  session t_i took longer than the preferred round duration T; an `exploration` share of the invitations
  goes to devices never tried, drawn uniformly.

Every draw comes from the stream the caller passes in (keyed by seed and round), so selection is the same
on any number of workers. A policy holds no state: it is its own typed config (aggregation/registry.py).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import numpy as np

from aggregation.registry import Registry, param


Figure = Callable[[], np.ndarray]


@dataclass
class DeviceHistory:
    """What the server remembers of each device from its earlier sessions (NaN: never reported)."""

    last_loss: np.ndarray
    last_duration_s: np.ndarray

    @classmethod
    def empty(cls, n: int) -> "DeviceHistory":
        return cls(np.full(n, np.nan), np.full(n, np.nan))


class SelectionContext:
    """The candidates (device ids, sorted), the server's memory of them, and what a policy may weigh them by,
    per candidate. Each figure is worked out when a policy first asks for it: a round may have a million
    candidates, and uniform selection asks for none."""

    def __init__(self, candidates: np.ndarray, history: DeviceHistory, *, charge_fraction: Figure,
                 link_rate_bps: Figure, flops: Figure, samples: Figure):
        self.candidates, self.history = candidates, history
        self._figures = {"charge_fraction": charge_fraction, "link_rate_bps": link_rate_bps, "flops": flops,
                         "samples": samples}

    @functools.cached_property
    def charge_fraction(self) -> np.ndarray:
        """1 for mains."""
        return self._figures["charge_fraction"]()

    @functools.cached_property
    def link_rate_bps(self) -> np.ndarray:
        """Alone in its cell (no fading), under the cell's interference."""
        return self._figures["link_rate_bps"]()

    @functools.cached_property
    def flops(self) -> np.ndarray:
        return self._figures["flops"]()

    @functools.cached_property
    def samples(self) -> np.ndarray:
        """Training tokens."""
        return self._figures["samples"]()


@dataclass(frozen=True)
class Uniform:
    def select(self, ctx: SelectionContext, k: int, rng: np.random.Generator) -> np.ndarray:
        return rng.choice(ctx.candidates, size=min(k, len(ctx.candidates)), replace=False)


@dataclass(frozen=True)
class ResourceAware:
    battery_weight: float = param(1.0, "weight of the battery charge fraction in the score")
    link_weight: float = param(1.0, "weight of the link rate (log scale, scaled to [0, 1] among candidates)")
    speed_weight: float = param(1.0, "weight of the compute speed (log scale, scaled to [0, 1] among candidates)")
    floor: float = param(0.05, "added to every score, so that no candidate is starved")

    def select(self, ctx: SelectionContext, k: int, rng: np.random.Generator) -> np.ndarray:
        score = (
            self.battery_weight * ctx.charge_fraction
            + self.link_weight * _unit(np.log10(ctx.link_rate_bps + 1.0))
            + self.speed_weight * _unit(np.log10(ctx.flops))
        ) + self.floor
        return rng.choice(ctx.candidates, size=min(k, len(ctx.candidates)), replace=False, p=score / score.sum())


@dataclass(frozen=True)
class Oort:
    preferred_duration_s: float = param(60.0, "T: sessions longer than this are penalised by (T / t_i)^alpha")
    alpha: float = param(2.0, "exponent of the penalty for slow devices")
    exploration: float = param(0.2, "share of the invitations that go to devices never tried")

    def select(self, ctx: SelectionContext, k: int, rng: np.random.Generator) -> np.ndarray:
        k = min(k, len(ctx.candidates))
        loss = ctx.history.last_loss[ctx.candidates]
        duration = ctx.history.last_duration_s[ctx.candidates]
        tried = ~np.isnan(duration)
        n_explore = min(int(round(self.exploration * k)) if tried.any() else k, int((~tried).sum()))
        explore = rng.choice(ctx.candidates[~tried], size=n_explore, replace=False) if n_explore else []
        utility = ctx.samples * np.nan_to_num(loss, nan=1.0)
        slow = duration > self.preferred_duration_s
        utility = np.where(slow, utility * (self.preferred_duration_s / np.where(slow, duration, 1.0)) ** self.alpha, utility)
        # Best utilities first among the tried devices; ties broken by a random key.
        order = np.lexsort((rng.random(int(tried.sum())), -utility[tried]))
        exploit = ctx.candidates[tried][order][: k - n_explore]
        chosen = np.concatenate([exploit, np.asarray(explore, dtype=exploit.dtype)])
        if len(chosen) < k:  # not enough tried devices: fill from the rest at random
            rest = np.setdiff1d(ctx.candidates, chosen)
            chosen = np.concatenate([chosen, rng.choice(rest, size=k - len(chosen), replace=False)])
        return chosen


def _unit(x: np.ndarray) -> np.ndarray:
    span = x.max() - x.min() if len(x) else 0.0
    return (x - x.min()) / span if span > 0 else np.ones_like(x)


SELECTORS: Registry = Registry("selection policy")
SELECTORS.register("uniform", Uniform)
SELECTORS.register("resource", ResourceAware)
SELECTORS.register("oort", Oort)


def build_selector(name: str, **params):
    return SELECTORS.build(name, **params)
