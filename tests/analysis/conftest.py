"""Synthetic run folders with known numbers, and the plotly figures read back out of a written page."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

# Five server versions; hand-computable cumulative costs: see tests that use them.
T_END = [0.0, 10.0, 25.0, 45.0, 70.0]
BYTES_UP = [0, 100, 200, 300, 400]
BYTES_DOWN = [0, 1000, 1000, 1000, 1000]
ENERGY_J = [0.0, 5.0, 5.0, 5.0, 5.0]
LOSS = [3.0, 2.8, 2.5, 2.6, 2.2]
OUTCOMES = ["completed", "completed", "offline", "battery", "surplus", "completed"]


def sessions(devices: int, per_round: int, asynchronous: bool, battery: bool) -> pd.DataFrame:
    """`per_round` sessions in each of rounds 1-4 among devices 0..devices-1; even devices are battery
    phones, odd ones mains-powered gateways."""
    rng = np.random.default_rng(0)
    rows = []
    for rnd in range(1, len(T_END)):
        for k, device in enumerate(rng.choice(devices, per_round, replace=False)):
            device = int(device)
            outcome = OUTCOMES[(rnd + k) % len(OUTCOMES)]
            done = outcome == "completed"
            t_start = T_END[rnd - 1] + rng.uniform(0, 2)
            download_s, train_s = rng.uniform(0.1, 1), rng.uniform(1, 5)
            upload_s = rng.uniform(0.1, 1) if done else 0.0
            if outcome == "offline":
                train_s = 0.0  # went offline while downloading
            phone = device % 2 == 0
            rows.append({
                "device": device, "round": rnd, "base_version": rnd - 1, "t_start": t_start,
                "t_end": t_start + download_s + train_s + upload_s + (0.05 if done else 0.0),
                "outcome": outcome, "phase": "done" if done else ("download" if train_s == 0 else "train"),
                "download_s": download_s, "train_s": train_s, "upload_s": upload_s,
                "bytes_down": 50, "bytes_up": 25 if done else 0, "bytes_down_air": 50.0,
                "bytes_up_air": 25 if done else 0, "energy_j": 1.0,
                "uplink_mbps": 10.0, "downlink_mbps": 20.0, "steps": 8,
                "staleness": (int(rng.integers(0, 4)) if asynchronous else 0) if done else -1,
                "charge_start": 0.8 if phone and battery else np.nan,
                "charge_end": 0.8 - 0.01 * rnd if phone and battery else np.nan,
                "device_class": "phone" if phone else "gateway", "cell": device % 3, "data_client": device,
            })
    frame = pd.DataFrame(rows)
    return frame if battery else frame.drop(columns=["charge_start", "charge_end"])


def rounds_frame(loss: list[float] | None, battery: bool) -> pd.DataFrame:
    n = len(T_END)
    nan = [np.nan] * n
    loss = nan if loss is None else loss
    frame = pd.DataFrame({
        "round": range(n), "version": range(n), "t_start": [0.0] + T_END[:-1], "t_end": T_END,
        "duration_s": np.diff([0.0] + T_END), "selected": [0] + [6] * (n - 1), "completed": [0] + [3] * (n - 1),
        "offline": 0, "device_failure": 0, "battery": 0, "link_outage": 0, "missed_deadline": 0, "surplus": 0,
        "stale": 0, "abandoned": False, "bytes_up": BYTES_UP, "bytes_down": BYTES_DOWN, "energy_j": ENERGY_J,
        "staleness_mean": 0.0, "staleness_max": 0, "eval_loss": loss, "eval_ppl": np.exp(loss),
        "personal_loss": np.add(loss, 0.1), "personal_global_loss": np.add(loss, 0.2), "train_loss": nan,
        "trained_payload_bytes": 25.0, "aggregation_error": "",
    })
    if battery:
        frame["charge_phone"] = np.linspace(0.8, 0.7, n)
        frame["charge_gateway"] = np.nan  # mains power: no battery
    return frame


@pytest.fixture
def make_run(tmp_path):
    """make_run(name, loss=LOSS, ...) -> a run folder: rounds.parquet, clients.parquet, summary.json."""

    def make(name: str = "run", loss: list[float] | None = LOSS, asynchronous: bool = False,
             battery: bool = True, devices: int = 80, per_round: int = 30, folder=None, **summary):
        run_dir = (folder or tmp_path) / name
        run_dir.mkdir(parents=True)
        rounds = rounds_frame(loss, battery)
        clients = sessions(devices, per_round, asynchronous, battery)
        rounds.to_parquet(run_dir / "rounds.parquet", index=False)
        clients.to_parquet(run_dir / "clients.parquet", index=False)
        base = {
            "scenario": name, "strategy": "fedbuff" if asynchronous else "fedavg", "rounds": len(T_END) - 1,
            "versions": len(T_END) - 1, "simulated_time_s": T_END[-1], "fleet_size": 200,
            "base_eval_loss": None if loss is None else loss[0], "final_eval_loss": None if loss is None else loss[-1],
            "sessions": len(clients), "completion_rate": float(clients["outcome"].eq("completed").mean()),
            "mean_round_s": float(np.mean(np.diff(T_END))), "bytes_up": sum(BYTES_UP), "bytes_down": sum(BYTES_DOWN),
            "energy_j": sum(ENERGY_J), "target_loss": None, "full_model_bytes": 1000,
            "full_model_uplink_bytes": 10 * sum(BYTES_UP), "uplink_fraction_of_full": 0.1,
        }
        (run_dir / "summary.json").write_text(json.dumps(base | summary))
        return run_dir

    return make
