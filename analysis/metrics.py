"""What a run reached and what it cost to get there: cumulative bytes and energy per server version, the
loss it ended at, the target loss a report measures to, and the time, bytes and energy until that target."""

from __future__ import annotations

import math

import pandas as pd


def with_cumulative(rounds: pd.DataFrame) -> pd.DataFrame:
    return rounds.assign(
        cum_bytes_up=rounds["bytes_up"].cumsum(),
        cum_bytes_down=rounds["bytes_down"].cumsum(),
        cum_energy_j=rounds["energy_j"].cumsum(),
    )


def losses(rounds: pd.DataFrame) -> pd.Series:
    """The held-out loss at each evaluated version; empty for systems-only runs."""
    return rounds["eval_loss"].dropna()


def final_loss(rounds: pd.DataFrame) -> float:
    measured = losses(rounds)
    return float(measured.iloc[-1]) if len(measured) else math.nan


def run_target(rounds: pd.DataFrame, summary: dict) -> tuple[float | None, str]:
    """The target loss of one run's report and how it was chosen: the scenario's output.target_loss if set,
    else halfway from the base model's loss to the lowest loss reached."""
    if summary.get("target_loss") is not None:
        return float(summary["target_loss"]), "set by the scenario (output.target_loss)"
    measured = losses(rounds)
    if measured.empty:
        return None, "not measured (no held-out loss in this run)"
    base, lowest = float(measured.iloc[0]), float(measured.min())
    if lowest >= base:
        return None, f"none: the loss never fell below the base model's {base:.4g}"
    return base + (lowest - base) / 2, f"halfway from the base model's loss {base:.4g} to the lowest, {lowest:.4g}"


def to_target(rounds: pd.DataFrame, target: float | None) -> dict:
    """Simulated time, uplink and downlink bytes and fleet energy until the held-out loss first reaches
    `target`, at the first evaluated version at or below it (NaN: never, or no target)."""
    rounds = with_cumulative(rounds)
    hit = rounds[rounds["eval_loss"] <= target] if target is not None else rounds.iloc[0:0]
    first = hit.iloc[0] if len(hit) else None

    def at(column: str) -> float:
        return float(first[column]) if first is not None else math.nan

    return {
        "time_to_target_s": at("t_end"),
        "uplink_bytes_to_target": at("cum_bytes_up"),
        "downlink_bytes_to_target": at("cum_bytes_down"),
        "energy_to_target_j": at("cum_energy_j"),
    }


def participation(clients: pd.DataFrame) -> dict:
    """Share of invited sessions that reported; distinct devices invited, and that reported at least once."""
    if clients.empty:
        return {"completion_rate": math.nan, "devices_invited": 0, "devices_reported": 0}
    done = clients["outcome"].eq("completed")
    return {
        "completion_rate": float(done.mean()),
        "devices_invited": int(clients["device"].nunique()),
        "devices_reported": int(clients.loc[done, "device"].nunique()),
    }


def loss_gain(summary: dict) -> float:
    """The share of the base model's held-out loss the run removed: 1 - final / base (NaN: not measured).
    A ratio, so that seeds and scenarios whose base loss differs are compared on one scale."""
    base, final = summary.get("base_eval_loss"), summary.get("final_eval_loss")
    if base is None or final is None or not base:
        return math.nan
    return 1 - final / base
