"""The smoke form of a scenario: does it run end to end? The same device classes, network, model, data
source and strategy, with everything that makes a run long cut down, so that it finishes in seconds.

`fedfleet run SCENARIO --smoke` appends `smoke_overrides(scenario)` to the user's `--set` overrides and
validates the result again, like any scenario. Only fields the scenario has are touched (a section that is
absent, such as cell-site data for a Shakespeare scenario, is left alone), and a field already at or below
its smoke value keeps its value.
"""

from __future__ import annotations

import math
from typing import Any

from scenarios.schema import Scenario

#: Devices in a smoke fleet, unless keeping every class present needs more.
SMOKE_FLEET = 200

#: Clients per round, unless the strategy needs more reports (run.min_reports).
SMOKE_CLIENTS = 4

#: The most each field keeps: two short rounds on a few cells. One worker actor: starting an actor (torch,
#: the base model) costs more than the whole smoke run's training.
SMOKE_CAPS: dict[str, int] = {
    "run.rounds": 2,
    "network.cells": 4,
    "data.eval_windows": 16,
    "training.local_steps": 2,
    "runtime.workers": 1,
    "runtime.threads_per_worker": 1,
    "strategy.buffer_size": SMOKE_CLIENTS,  # asynchronous strategies: updates per version
    "data.cellsite.sites": 20,
    "data.cellsite.days": 2,
    "data.cellsite.eval_sites": 4,
    "data.cellsite.windows_per_site": 8,
    "data.cellsite.local_sessions": 2,
}


def smoke_overrides(scenario: Scenario) -> list[str]:
    """`field=value` overrides that shrink `scenario` to its smoke form."""
    tree = scenario.model_dump()
    caps = {**SMOKE_CAPS,
            "run.clients_per_round": max(SMOKE_CLIENTS, scenario.run.min_reports),
            "fleet.size": smoke_fleet_size(scenario)}
    overrides = []
    for path, cap in caps.items():
        value = _lookup(tree, path)
        if isinstance(value, int) and value > cap:
            overrides.append(f"{path}={cap}")
    return overrides


def smoke_fleet_size(scenario: Scenario) -> int:
    """SMOKE_FLEET devices, or enough that the smallest class still gets one: the fleet gives each class
    floor(fraction / total x size) devices (fleet.devices.sample_fleet)."""
    fractions = [m.fraction for m in scenario.fleet.classes]
    # + 1: floor(f / total x n) must reach 1 even where the division rounds down
    return max(SMOKE_FLEET, math.ceil(sum(fractions) / min(fractions)) + 1)


def _lookup(tree: dict[str, Any], path: str) -> Any:
    """The value at a dotted path, or None where a section or field is absent."""
    node: Any = tree
    for part in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node
