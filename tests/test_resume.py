"""Crash safety of a real run: `fedfleet run` killed with SIGKILL (the driver and its Ray workers at once),
stopped by SIGTERM or Ctrl-C, or stopped by a full disk, then `fedfleet run --resume RUN_DIR`, ends with
the records and the adapter of a run that never stopped; so does a resume whose last checkpoint was damaged
meanwhile, from the checkpoint before it."""

import os
import signal
import subprocess
import sys
import time
import uuid
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


def fedfleet(*args: str, tag: str = "", program: tuple[str, ...] = ("-m", "scenarios.cli")) -> subprocess.Popen:
    """The command in its own process group, so that a kill takes its Ray processes with it; `tag` goes into
    the environment, which its Ray processes inherit (`tagged_processes`)."""
    return subprocess.Popen([sys.executable, *program, *args, "--quiet"], start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "FEDFLEET_TEST_TAG": tag})


def tagged_processes(tag: str) -> set[int]:
    """Live processes whose environment holds the tag, and their descendants: Ray's workers retitle
    themselves (setproctitle), which blanks the environment /proc shows. A zombie's environment reads empty."""
    parents, found = {}, set()
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit():
                continue
            parents[int(proc.name)] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if f"FEDFLEET_TEST_TAG={tag}".encode() in (proc / "environ").read_bytes():
                found.add(int(proc.name))
        except OSError:  # gone meanwhile, or not ours
            pass
    grew = True
    while grew:
        children = {pid for pid, parent in parents.items() if parent in found} - found
        found |= children
        grew = bool(children)
    return found


def stop_after_a_checkpoint(out: Path, data: Path, signum: int, group: bool) -> None:
    """Start a run into `out` and send `signum` once its first checkpoint is written (to the process group,
    as a terminal's Ctrl-C does, or to the process, as `kill` does); check that it stopped cleanly: before its
    end, with a checkpoint, the resume command printed and every process it had started gone."""
    tag = uuid.uuid4().hex
    run = fedfleet("run", "quickstart", "--out", str(out), *overrides(data), tag=tag)
    ray = set()  # the processes the run started, seen while it runs
    deadline = time.monotonic() + 600
    while not (out / "checkpoint.safetensors").exists():
        assert run.poll() is None, "the run ended before it could be stopped"
        assert time.monotonic() < deadline
        ray.update(tagged_processes(tag) - {run.pid})
        time.sleep(0.02)
    (os.killpg if group else os.kill)(run.pid, signum)
    printed, _ = run.communicate(timeout=300)
    assert run.returncode == 128 + signum, printed
    assert f"fedfleet run --resume {out}" in printed
    assert (out / "checkpoint.safetensors").exists() and not (out / "summary.json").exists()
    assert rows(out / "rounds.parquet") <= ROUNDS
    assert ray, "the run had started no Ray process to check"
    deadline = time.monotonic() + 30
    while running(ray) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not running(ray), "Ray processes outlived the run"


def running(pids: set[int]) -> set[int]:
    """Those of `pids` still running (a zombie has ended)."""
    alive = set()
    for pid in pids:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                alive.add(pid)
        except OSError:
            pass
    return alive


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


def test_sigterm_stops_with_a_checkpoint_and_resumes(whole, tmp_path, tiny_jsonl):
    """SIGTERM, as a scheduler sends it: the run ends its round, checkpoints it, shuts Ray down and says how
    to go on."""
    out = tmp_path / "run"
    stop_after_a_checkpoint(out, tiny_jsonl, signal.SIGTERM, group=False)
    finish(fedfleet("run", "--resume", str(out)))
    assert_same_run(whole, out)


@pytest.mark.slow
def test_ctrl_c_stops_and_a_damaged_checkpoint_resumes_from_the_one_before(whole, tmp_path, tiny_jsonl):
    """Ctrl-C reaches the whole process group; then bytes of the stop's checkpoint are flipped on disk. The
    resume reports the damage and goes on from the checkpoint before it."""
    out = tmp_path / "run"
    stop_after_a_checkpoint(out, tiny_jsonl, signal.SIGINT, group=True)
    assert (out / "checkpoint.previous.safetensors").exists()
    last = out / "checkpoint.safetensors"
    damaged = bytearray(last.read_bytes())
    damaged[-100:-90] = bytes(b ^ 0xFF for b in damaged[-100:-90])
    last.write_bytes(bytes(damaged))
    resumed = fedfleet("run", "--resume", str(out))
    printed, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, printed
    assert "do not match its SHA-256 checksum" in printed and "checkpoint.previous.safetensors" in printed
    assert_same_run(whole, out)


FULL_DISK_AT_SECOND_CHECKPOINT = """
import errno, sys
import analysis.checkpoint
real, calls = analysis.checkpoint.save_file, []
def full_disk(tensors, path, metadata):
    calls.append(path)
    if len(calls) == 2:
        path.write_bytes(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    return real(tensors, path, metadata=metadata)
analysis.checkpoint.save_file = full_disk
from scenarios.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_full_disk_stops_the_run_which_resumes_once_there_is_room(whole, tmp_path, tiny_jsonl):
    """No space left while the second checkpoint is written: the run stops saying so, the folder keeps the
    first checkpoint and readable tables, and --resume completes the run."""
    out = tmp_path / "run"
    run = fedfleet("run", "quickstart", "--out", str(out), *overrides(tiny_jsonl),
                   program=("-c", FULL_DISK_AT_SECOND_CHECKPOINT))
    printed, _ = run.communicate(timeout=600)
    assert run.returncode == 1, printed
    assert "the disk is full" in printed and f"fedfleet run --resume {out}" in printed
    assert "Traceback" not in printed
    assert [p.name for p in out.glob(".*")] == [] and [p.name for p in (out / "clients.parquet").glob(".*")] == []
    assert len(pd.read_parquet(out / "rounds.parquet")) >= 3 and len(pd.read_parquet(out / "clients.parquet"))
    finish(fedfleet("run", "--resume", str(out)))
    assert_same_run(whole, out)
