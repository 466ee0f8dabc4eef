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


def files(folder) -> dict:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.iterdir()}


def test_a_flush_appends_a_part_and_leaves_the_written_ones_alone(tmp_path):
    """Each flush costs its own rows, not the table's: parts already written are never rewritten (unless a
    column widens, which these rounds never do)."""
    rng = np.random.default_rng(2)
    rec = RunRecorder(tmp_path / "run", {}, flush_every=1)
    seen = {}
    for rnd in range(2, 8):
        rec.sessions(round_sessions(rnd, 10, rng) | {"uplink_mbps": rng.random(10).tolist()})
        rec.round({"round": rnd})
        now = files(tmp_path / "run" / "clients.parquet")
        assert len(now) == rnd - 1 and all(now[name] == seen[name] for name in seen)
        seen = now


def test_a_flush_cut_short_by_a_full_disk_leaves_the_table_readable(tmp_path, monkeypatch):
    """The part being written is lost, never half there; the sessions wait and go out with the next flush."""
    import analysis.recorder

    rng = np.random.default_rng(3)
    rec = RunRecorder(tmp_path / "run", {}, flush_every=100)
    frames = [pd.DataFrame(round_sessions(r, 10, rng)) for r in (1, 2, 3)]
    rec.sessions(frames[0].to_dict("list"))
    rec.flush()
    real = analysis.recorder.pq.write_table

    def full_disk(table, path, **kwargs):
        if not str(path).endswith(".tmp"):  # not the recorder's (pandas writes through it too)
            return real(table, path, **kwargs)
        path.write_bytes(b"PAR1 half a part")
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(analysis.recorder.pq, "write_table", full_disk)
    rec.sessions(frames[1].to_dict("list"))
    with pytest.raises(OSError):
        rec.flush()  # the second round widens t_start: every part is being rewritten
    folder = tmp_path / "run" / "clients.parquet"
    assert sorted(p.name for p in folder.iterdir()) == ["part-000000.parquet"]
    pd.testing.assert_frame_equal(pd.read_parquet(folder), whole_table(frames[:1], tmp_path))
    monkeypatch.setattr(analysis.recorder.pq, "write_table", real)
    rec.sessions(frames[2].to_dict("list"))
    rec.flush()
    pd.testing.assert_frame_equal(pd.read_parquet(folder), whole_table(frames, tmp_path))


def test_reopen_cuts_the_parts_back_to_the_checkpoint(tmp_path):
    """Rows recorded after the checkpoint are dropped, whole parts and the tail of one; so is a part left
    half written; the run then goes on appending."""
    rng = np.random.default_rng(4)
    rec = RunRecorder(tmp_path / "run", {}, flush_every=1)
    frames = [pd.DataFrame(round_sessions(r, 6, rng)) for r in range(1, 6)]
    for rnd, frame in enumerate(frames[:2], 1):
        rec.sessions(frame.to_dict("list"))
        rec.round({"round": rnd})
    rec.checkpoint({"journal": "[]"})
    for rnd, frame in enumerate(frames[2:4], 3):
        rec.sessions(frame.to_dict("list"))
        rec.round({"round": rnd})
    folder = tmp_path / "run" / "clients.parquet"
    (folder / ".part-000004.parquet.tmp").write_bytes(b"PAR1 half")
    # the checkpoint is said to cover 9 sessions: the second part is cut to 3 rows
    from analysis import checkpoint

    checkpoint.save(tmp_path / "run" / "checkpoint.safetensors",
                    {"emulator": {"journal": "[]"}, "rounds": 2, "sessions": 9})
    again, saved = RunRecorder.reopen(tmp_path / "run")
    assert saved == {"journal": "[]"} and len(again.rounds_rows) == 2
    assert sorted(p.name for p in folder.iterdir()) == ["part-000000.parquet", "part-000001.parquet"]
    kept = pd.concat(frames[:2], ignore_index=True).iloc[:9]
    again.sessions(frames[4].to_dict("list"))
    again.close({})
    expected = whole_table([kept, frames[4]], tmp_path)
    pd.testing.assert_frame_equal(pd.read_parquet(folder), expected)


def test_reopen_takes_up_a_run_folder_with_a_single_file_table(tmp_path):
    """Run folders written when clients.parquet was one file resume too."""
    rng = np.random.default_rng(5)
    frame = pd.DataFrame(round_sessions(2, 8, rng))
    (tmp_path / "run").mkdir()
    frame.to_parquet(tmp_path / "run" / "clients.parquet", index=False)
    pd.DataFrame({"round": [0, 1]}).to_parquet(tmp_path / "run" / "rounds.parquet", index=False)
    from analysis import checkpoint

    checkpoint.save(tmp_path / "run" / "checkpoint.safetensors", {"emulator": {}, "rounds": 1, "sessions": 8})
    again, _ = RunRecorder.reopen(tmp_path / "run")
    more = pd.DataFrame(round_sessions(3, 4, rng))
    again.sessions(more.to_dict("list"))
    again.close({})
    assert (tmp_path / "run" / "clients.parquet").is_dir()
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "run" / "clients.parquet"),
                                  whole_table([frame, more], tmp_path))
