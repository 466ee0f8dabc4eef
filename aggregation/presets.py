"""Partial and personalised aggregation presets: FedAvg over the shared entries only (aggregation/partial.py
says which entries each preset shares, keeps on the device, or freezes).

- pwff (Jiang et al., "Personalized Wireless Federated Learning for Large Language Models", arXiv
  2404.13238): the bottleneck adapters are averaged globally, the LoRA part stays on the device; the local
  loss is the task loss plus mu/2 ||theta_k - theta_g||^2 over the global part. PWFF's local alignment with
  two reward models is out of scope.
- fedsa_lora (Guo et al., ICLR 2025): A averaged, B personal.
- ffa_lora (Sun et al., ICLR 2024): A frozen at its seeded initial value everywhere; only B is trained and
  sent, so averaging B gives exactly sum p_k B_k A0.

Client duties: start from the global shared entries plus its own personal entries, keep the personal ones
after training, send only the shared ones; PWFF adds the proximal term.
"""

from __future__ import annotations

from dataclasses import dataclass

from aggregation.base import ClientConfig
from aggregation.fedavg import FedAvg
from aggregation.partial import FEDSA_LORA, FFA_LORA, PWFF
from aggregation.registry import param, register_strategy


@dataclass(frozen=True)
class PwffConfig:
    mu: float = param(0.01, "weight of the proximal term toward the global (bottleneck) part, >= 0")
    server_lr: float = param(1.0, "server learning rate eta over the shared entries")

    def __post_init__(self) -> None:
        if self.mu < 0:
            raise ValueError(f"mu: must be >= 0, got {self.mu}")


@register_strategy
class Pwff(FedAvg):
    name = "pwff"
    config_class = PwffConfig
    groups = PWFF

    def configure(self, client: int, version: int) -> ClientConfig:
        return ClientConfig(prox_mu=self.config.mu)

    def nothing_shared(self) -> str:
        return super().nothing_shared() + " (PWFF shares the bottleneck adapters: set model.lora.bottleneck)"


@register_strategy
class FedSaLora(FedAvg):
    name = "fedsa_lora"
    groups = FEDSA_LORA


@register_strategy
class FfaLora(FedAvg):
    name = "ffa_lora"
    groups = FFA_LORA
