"""Crash safety of a real run: `fedfleet run` killed with SIGKILL (the driver and its Ray workers at once),
then `fedfleet run --resume RUN_DIR`, ends with the records and the adapter of a run that never stopped."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from safetensors.torch import load_file

ROUNDS = 5


def overrides(data: Path, *extra: str) -> list[str]:
    items = ["fleet.size=60", f"run.rounds={ROUNDS}", "run.clients_per_round=4", "run.deadline_s=600",
             "run.checkpoint_every=2", "training.local_steps=2", "training.batch_size=4", "data.eval_windows=16",
             "data.source=jsonl", f"data.path={data}", "output.report=false", "runtime.workers=1",
             "strategy.name=fedsa_lora", "strategy.compression.name=q8", *extra]
    return [arg for item in items for arg in ("--set", item)]


def fedfleet(*args: str) -> subprocess.Popen:
    """The command in its own process group, so that a kill takes its Ray processes with it."""
    return subprocess.Popen([sys.executable, "-m", "scenarios.cli", *args, "--quiet"], start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen) -> None:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out


def rows(path: Path) -> int:
    try:
        return pq.read_metadata(path).num_rows
    except (OSError, ValueError):  # not written yet
        return 0


def kill_when(proc: subprocess.Popen, ready) -> None:
    """SIGKILL the whole process group as soon as `ready()` holds."""
    deadline = time.monotonic() + 600
    while not ready():
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def assert_same_run(a: Path, b: Path) -> None:
    for table in ("rounds.parquet", "clients.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(a / table), pd.read_parquet(b / table))
    weights = [load_file(run / "adapter" / "adapter_model.safetensors") for run in (a, b)]
    assert weights[0].keys() == weights[1].keys()
    assert all(weights[0][k].equal(weights[1][k]) for k in weights[0])
    assert not (b / "checkpoint.safetensors").exists()  # removed once the run is complete


@pytest.fixture(scope="module")
def whole(tmp_path_factory, tiny_jsonl) -> Path:
    out = tmp_path_factory.mktemp("whole") / "run"
    finish(fedfleet("run", "quickstart", "--out", str(out), *overrides(tiny_jsonl)))
    return out


def test_killed_after_a_checkpoint_and_resumed(whole, tmp_path, tiny_jsonl):
    """FedSA-LoRA with 8-bit uploads: personal parts and error-feedback residuals in the run's state files,
    which the kill leaves behind half written."""
    out = tmp_path / "run"
    run = fedfleet("run", "quickstart", "--out", str(out), *overrides(tiny_jsonl))
    # Killed with rows recorded beyond the checkpoint (round 2), which the resumed run must cut back.
    kill_when(run, lambda: (out / "checkpoint.safetensors").exists() and rows(out / "rounds.parquet") >= 4)
    assert not (out / "summary.json").exists()
    finish(fedfleet("run", "--resume", str(out)))
    assert_same_run(whole, out)
    assert pd.read_parquet(out / "rounds.parquet")["round"].tolist() == list(range(ROUNDS + 1))


def test_resume_refuses_to_change_the_scenario_or_a_complete_run(whole, tmp_path):
    proc = fedfleet("run", "--resume", str(whole), "--set", "run.rounds=9")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "--set cannot change it" in out
    proc = fedfleet("run", "--resume", str(whole))
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "is complete" in out


@pytest.mark.slow
def test_killed_anywhere_even_twice_and_before_any_checkpoint(tmp_path, tiny_jsonl):
    """FedBuff (sessions still at work at every checkpoint), killed before its first checkpoint, then while
    the resumed run replays or trains, and resumed once more."""
    asynchronous = ("strategy.name=fedbuff", "strategy.buffer_size=2")
    reference = tmp_path / "whole"
    finish(fedfleet("run", "quickstart", "--out", str(reference), *overrides(tiny_jsonl, *asynchronous)))
    out = tmp_path / "run"
    run = fedfleet("run", "quickstart", "--out", str(out), *overrides(tiny_jsonl, *asynchronous))
    kill_when(run, lambda: rows(out / "rounds.parquet") >= 1)
    assert not (out / "checkpoint.safetensors").exists()  # nothing to go on from: the run starts again
    run = fedfleet("run", "--resume", str(out))
    kill_when(run, lambda: (out / "checkpoint.safetensors").exists())
    run = fedfleet("run", "--resume", str(out), "--workers", "2")  # workers change no number
    kill_when(run, lambda: rows(out / "rounds.parquet") >= ROUNDS)
    finish(fedfleet("run", "--resume", str(out)))
    assert_same_run(reference, out)
