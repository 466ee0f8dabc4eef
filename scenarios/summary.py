"""What summary.json says of a run: its headline figures (losses, time, bytes, energy, participation), what
the same sessions would have uploaded as full-model fine-tuning, and what the fleet and models were.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from analysis.recorder import RunRecorder
from fleet.architectures import Architecture
from fleet.emulator import SessionCost
from fleet.payload import emulated_values
from scenarios.assembly import Assembly, group_size, invitable, uses_fast_clock
from scenarios.checks import timed_modules


def full_model_uplink(sessions, arch: Architecture, cost: SessionCost, fleet_size: int) -> dict:
    """What the same sessions would have uploaded in full-model federated fine-tuning: each session's
    upload scaled from its device's LoRA payload to the emulated model's full weights (float32,
    uncompressed), so cut-off uploads count for the same share they sent."""
    full = 4 * arch.params
    lora = np.broadcast_to(np.asarray(cost.bytes_up, dtype=np.float64), fleet_size)
    sent = sessions["bytes_up"].to_numpy(np.float64) if len(sessions) else np.zeros(0)
    # A round with no session makes clients.parquet's integer columns floats (analysis/recorder.py).
    payload = lora[sessions["device"].to_numpy().astype(np.int64)] if len(sessions) else np.zeros(0)
    full_uplink = float(np.sum(np.divide(sent * full, payload, out=np.zeros_like(sent), where=payload > 0)))
    return {
        "full_model_bytes": full,
        "full_model_uplink_bytes": full_uplink,
        "uplink_fraction_of_full": float(sent.sum() / full_uplink) if full_uplink else None,
    }


def summarise(run: Assembly, recorder: RunRecorder, wall_start: float) -> dict:
    """The run's headline figures for summary.json, from what the recorder holds."""
    scenario, data, fleet, ranks, arch, layout = run.scenario, run.data, run.fleet, run.ranks, run.arch, run.layout
    rounds = recorder.rounds_rows
    sessions = recorder.sessions_frame(["device", "outcome", "bytes_up"])  # read back from disk: only what is used
    losses = [row["eval_loss"] for row in rounds if not np.isnan(row["eval_loss"])]
    personal = [row for row in rounds if not np.isnan(row.get("personal_loss", np.nan))]
    done = [row for row in rounds if row["round"] > 0]
    return {
        "scenario": scenario.name,
        "seed": scenario.seed,
        "mode": scenario.run.mode,
        "engine": "fast" if uses_fast_clock(scenario) else "events",
        "rounds": len(done),
        "versions": rounds[-1]["version"],
        "simulated_time_s": rounds[-1]["t_end"],
        "base_eval_loss": losses[0] if losses else None,
        "final_eval_loss": losses[-1] if losses else None,
        "strategy": scenario.strategy.name,
        "final_personal_loss": personal[-1]["personal_loss"] if personal else None,
        "final_personal_global_loss": personal[-1]["personal_global_loss"] if personal else None,
        "sessions": len(sessions),
        "completion_rate": float((sessions["outcome"] == "completed").mean()) if len(sessions) else 0.0,
        "mean_round_s": float(np.mean([row["duration_s"] for row in done])) if done else 0.0,
        "bytes_up": int(sum(row["bytes_up"] for row in rounds)),
        "bytes_down": int(sum(row["bytes_down"] for row in rounds)),
        "energy_j": float(sum(row["energy_j"] for row in rounds)),
        "target_loss": scenario.output.target_loss,
        **full_model_uplink(sessions, arch, run.cost, len(fleet)),
        "fleet_size": len(fleet),
        "eligible_devices": int((ranks > 0).sum()),
        "invitable_devices": int(invitable(fleet, ranks).sum()),
        "data_clients": len(data.client_ids),
        "trained_model": scenario.model.path,
        "emulated_model": arch.name,
        "emulated_params": arch.params,
        "adapter_params": emulated_values(arch, layout, torch.ones(layout.size, dtype=torch.bool),
                                          scenario.model.lora.r, scenario.model.lora.bottleneck,
                                          timed_modules(scenario)),
        "devices_per_rank": {int(r): int(n) for r, n in zip(*np.unique(ranks, return_counts=True))},
        "flops_per_session": run.cost.flops,
        "training_memory_gb": run.memory.total_bytes / 1e9,
        "group_size": group_size(scenario),  # clients a worker trained per pass, runtime.group_size: auto resolved
        "wall_s": time.time() - wall_start,
    }
