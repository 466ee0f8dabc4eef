"""The run folder's session table is written as the run goes: read back at any flush and at the end, it
equals the file written from the concatenation of every round's sessions (as the recorder wrote it when
it held every session in memory), though the recorder holds only the rounds since the last flush."""

import numpy as np
import pandas as pd
import pytest

from analysis.recorder import RunRecorder, load_run


def round_sessions(rnd: int, n: int, rng: np.random.Generator) -> dict[str, list]:
    return {
        "device": rng.integers(0, 10_000, n).tolist(),
        "round": [rnd] * n,
        # SimPy's clock starts at the integer 0: the first round's start times are ints, later ones floats
        "t_start": [0] * n if rnd == 1 else (rnd * 100.0 + rng.random(n)).tolist(),
        "outcome": rng.choice(["completed", "offline", "surplus"], n).tolist(),
        "uplink_mbps": [float("nan")] * n if rnd == 3 else rng.random(n).tolist(),
        "bytes_up": rng.integers(0, 4000, n).tolist(),
    }


def whole_table(frames: list[pd.DataFrame], folder) -> pd.DataFrame:
    """Every session concatenated in memory, written and read back."""
    path = folder / "whole.parquet"
    pd.concat(frames, ignore_index=True).to_parquet(path, index=False)
    return pd.read_parquet(path)


@pytest.mark.parametrize("flush_every, flush_rows", [(1, 10**9), (3, 10**9), (100, 25)])
def test_sessions_read_back_as_their_concatenation(tmp_path, flush_every, flush_rows):
    rng = np.random.default_rng(0)
    rec = RunRecorder(tmp_path / "run", {"name": "t"}, flush_every=flush_every, flush_rows=flush_rows)
    frames = []
    for rnd in range(1, 9):
        columns = round_sessions(rnd, 0 if rnd == 5 else int(rng.integers(1, 20)), rng)  # round 5: nobody (concat: ints become floats)
        frames.append(pd.DataFrame(columns))
        rec.sessions(columns)
        rec.round({"round": rnd, "t_end": float(rnd)})
        if rnd % flush_every == 0:  # what a reader sees during the run
            pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "run" / "clients.parquet"),
                                          whole_table(frames, tmp_path))
    assert rec._waiting_rows < flush_rows or rec._waiting_rows == 0
    rec.close({"rounds": 8})
    rounds, sessions, summary = load_run(tmp_path / "run")
    expected = whole_table(frames, tmp_path)
    assert sessions["t_start"].dtype == sessions["device"].dtype == np.float64  # widened, as concat does
    pd.testing.assert_frame_equal(sessions, expected)
    pd.testing.assert_frame_equal(rec.sessions_frame(["device", "outcome"]), expected[["device", "outcome"]])
    assert list(rounds["round"]) == list(range(1, 9)) and summary == {"rounds": 8}


def test_waiting_sessions_are_bounded_by_flush_rows(tmp_path):
    rng = np.random.default_rng(1)
    rec = RunRecorder(tmp_path / "run", {}, flush_every=1000, flush_rows=50)
    for rnd in range(1, 30):
        rec.sessions(round_sessions(rnd, 20, rng))
        assert rec._waiting_rows < 50
    assert len(rec.sessions_frame()) == 29 * 20


def test_a_run_without_sessions_writes_the_empty_table_concat_gives(tmp_path):
    empty = {"device": [], "outcome": []}
    rec = RunRecorder(tmp_path / "run", {}, flush_every=1)
    rec.sessions(empty)
    rec.round({"round": 1})
    rec.close({})
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "run" / "clients.parquet"),
                                  whole_table([pd.DataFrame(empty)], tmp_path))
    assert len(rec.sessions_frame()) == 0
