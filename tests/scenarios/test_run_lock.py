"""One run at a time per run folder: `--resume` of a folder whose run is still going is refused before it
touches anything; the lock of a killed run does not stand in the way."""

import os
import subprocess
import sys

import pytest

from scenarios.cli import main
from scenarios.errors import ScenarioError
from scenarios.run_lock import LOCK, run_lock

SMALL = ["run.mode=systems", "fleet.size=60", "run.rounds=2", "run.clients_per_round=4", "output.report=false",
         "data.eval_windows=16"]


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_live_owner_keeps_the_lock_and_a_dead_ones_is_taken_over(tmp_path):
    with run_lock(tmp_path):
        assert (tmp_path / LOCK).read_text() == f"{os.getpid()}\n"
        with pytest.raises(ScenarioError, match=f"pid {os.getpid()}"):
            with run_lock(tmp_path):
                pass
        assert (tmp_path / LOCK).exists()  # the refused one took nothing away
    assert not (tmp_path / LOCK).exists()
    (tmp_path / LOCK).write_text(f"{dead_pid()}\n")
    with run_lock(tmp_path):
        assert (tmp_path / LOCK).read_text() == f"{os.getpid()}\n"


@pytest.fixture
def stopped_run(tmp_path):
    """The folder of a systems-only run that has not finished (no summary.json)."""
    run = tmp_path / "run"
    assert main(["run", "quickstart", *[a for o in SMALL for a in ("--set", o)], "--out", str(run), "--quiet"]) == 0
    (run / "summary.json").unlink()
    return run


def test_resuming_a_folder_whose_run_is_going_is_refused_untouched(stopped_run, capsys):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (stopped_run / LOCK).write_text(f"{sleeper.pid}\n")
        rounds = (stopped_run / "rounds.parquet").read_bytes()
        assert main(["run", "--resume", str(stopped_run), "--quiet"]) == 2
        assert f"pid {sleeper.pid}" in capsys.readouterr().err
        assert (stopped_run / "rounds.parquet").read_bytes() == rounds
        assert (stopped_run / LOCK).read_text() == f"{sleeper.pid}\n"
    finally:
        sleeper.kill()
        sleeper.wait()
    # the run that held it is gone: its lock no longer stands in the way
    assert main(["run", "--resume", str(stopped_run), "--quiet"]) == 0
    assert (stopped_run / "summary.json").exists() and not (stopped_run / LOCK).exists()
