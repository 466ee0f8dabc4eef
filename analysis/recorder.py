"""The run folder, written as the run goes.

    RUN_DIR/
      scenario.resolved.yaml   every field, defaults included, plus the seed actually used
      rounds.parquet           one row per round (server version), rewritten after each round
      clients.parquet/         one row per client session: a folder of parts (part-000000.parquet, ...), one
                               appended every `flush_every` rounds; pandas.read_parquet reads it as one table
      checkpoint.safetensors   what a resumed run needs (analysis/checkpoint.py), while the run is going, and
      checkpoint.previous.safetensors  the one before it, in case the last is damaged; both removed once
                               summary.json is written
      summary.json             headline figures, written at the end
      adapter/                 the final global adapter in PEFT format
      report.html              figures (analysis.report)

Every file is written under a hidden temporary name and renamed into place, so a crash at any instant (or a
full disk) leaves each table readable: a reader sees a part whole or not at all.

Memory: the rows of rounds stay in memory (one per server version, a few kB each); the sessions do not.
Sessions wait in memory only until the next flush (at most `flush_every` rounds or `flush_rows` rows),
then go to disk as a new part, so the driver never holds the whole table and a flush costs only its own
rows. Read back, the table equals the concatenation of every round's sessions (pandas.concat): a column
whose type widens in a later round (an integer column that meets a float, or an empty round) is widened in
the parts already written as well, which happens a few times in a run at most.

A checkpoint says how many rows of each table it covers; a resumed run (`RunRecorder.reopen`) cuts the
tables back to those rows, since the run may have recorded more before it stopped.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from analysis import checkpoint

CHECKPOINT = "checkpoint.safetensors"
CLIENTS = "clients.parquet"

log = logging.getLogger(__name__)


class RunRecorder:
    def __init__(self, run_dir: Path, resolved: dict | None, flush_every: int = 5, flush_rows: int = 100_000):
        """A new run folder; `resolved` None: the folder of a run going on (`reopen`)."""
        self.dir = Path(run_dir)
        if resolved is not None:
            self.dir.mkdir(parents=True, exist_ok=False)
            (self.dir / "scenario.resolved.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
        self.rounds_rows: list[dict] = []
        self.flush_every, self.flush_rows = flush_every, flush_rows
        self._waiting: list[pd.DataFrame] = []  # sessions not yet in clients.parquet
        self._waiting_rows = 0
        # No rows, the column types of everything recorded so far: pandas.concat takes a column's type from
        # every frame, empty ones included (an empty round turns integer columns into floats).
        self._head: pd.DataFrame | None = None
        self._schema: pa.Schema | None = None  # of the parts written
        self._parts: list[tuple[Path, int]] = []  # (file, rows), in order
        self._rows_written = 0

    @classmethod
    def reopen(cls, run_dir: Path) -> tuple["RunRecorder", dict | None]:
        """The recorder of a stopped run, its tables cut back to its last sound checkpoint, and the emulator's
        state saved there; without a checkpoint, empty tables and None (the run starts again)."""
        recorder = cls(run_dir, None)
        saved = last_checkpoint(recorder.dir) or {"rounds": 0, "sessions": 0, "emulator": None}
        rounds = recorder.dir / "rounds.parquet"
        if saved["rounds"]:
            recorder.rounds_rows = pd.read_parquet(rounds).iloc[: saved["rounds"]].to_dict("records")
            _write_parquet(pd.DataFrame(recorder.rounds_rows), rounds)
        else:
            rounds.unlink(missing_ok=True)
        recorder._keep_sessions(saved["sessions"] if saved["emulator"] is not None else 0)
        return recorder, saved["emulator"]

    def checkpoint(self, state: dict) -> None:
        """Save the emulator's state with the rows it covers, clients.parquet flushed first."""
        self.flush()
        checkpoint.save(self.dir / CHECKPOINT, {"emulator": state, "rounds": len(self.rounds_rows),
                                                "sessions": self._rows_written})

    def round(self, row: dict) -> None:
        self.rounds_rows.append(row)
        _write_parquet(pd.DataFrame(self.rounds_rows), self.dir / "rounds.parquet")

    def sessions(self, columns: dict[str, list]) -> None:
        """One round's sessions, as columns. Counted in rounds of sessions, flushes fall on the rounds a
        checkpoint (which flushes first) falls on, so the two make one part, not two."""
        frame = pd.DataFrame(columns)
        self._waiting.append(frame)
        self._waiting_rows += len(frame)
        if self._waiting_rows >= self.flush_rows or len(self._waiting) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """Append the waiting sessions to clients.parquet as a new part."""
        if not self._waiting and self._head is not None:
            return
        heads = ([] if self._head is None else [self._head]) + [f.iloc[:0] for f in self._waiting]
        head = pd.concat(heads, ignore_index=True) if heads else pd.DataFrame()
        dtypes = dict(head.dtypes)
        frames = [f for f in self._waiting if len(f)]
        if frames:  # an empty part stood only for the column types of a table with no rows
            self._drop_parts(lambda rows: rows == 0)
        schema = _schema(head, frames, dtypes, self._schema)
        if self._schema is not None and not schema.equals(self._schema):
            self._widen(dtypes, schema)
        if frames:
            self._append(pa.concat_tables([_as_schema(f, dtypes, schema) for f in frames]))
        elif not self._parts:  # no session yet: the empty table pandas.concat gives
            self._append(_as_schema(head, dtypes, schema))
        self._head, self._schema = head, schema
        self._waiting, self._waiting_rows = [], 0

    def sessions_frame(self, columns: list[str] | None = None) -> pd.DataFrame:
        """Every session recorded so far (only `columns`, where given), read back from clients.parquet."""
        self.flush()
        if not self._rows_written:
            return self._head if columns is None else self._head[columns]
        return pd.read_parquet(self.dir / CLIENTS, columns=columns)

    def close(self, summary: dict) -> None:
        _write_parquet(pd.DataFrame(self.rounds_rows), self.dir / "rounds.parquet")
        self.flush()
        (self.dir / "summary.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
        for path in (self.dir / CHECKPOINT, checkpoint.previous(self.dir / CHECKPOINT)):
            path.unlink(missing_ok=True)  # the run is complete: nothing to resume

    # --- clients.parquet's parts --------------------------------------------------------------------

    def _append(self, table: pa.Table) -> None:
        folder = self.dir / CLIENTS
        folder.mkdir(exist_ok=True)
        part = folder / f"part-{len(self._parts):06d}.parquet"
        _write_table(table, part)
        self._parts.append((part, table.num_rows))
        self._rows_written += table.num_rows

    def _widen(self, dtypes: dict, schema: pa.Schema) -> None:
        for part, _ in self._parts:
            _write_table(_as_schema(pd.read_parquet(part), dtypes, schema), part)

    def _drop_parts(self, drop) -> None:
        for part, rows in self._parts:
            if drop(rows):
                part.unlink()
        self._parts = [(part, rows) for part, rows in self._parts if not drop(rows)]

    def _keep_sessions(self, keep: int) -> None:
        """Cut clients.parquet back to its first `keep` rows, and take up its parts."""
        folder = self.dir / CLIENTS
        if folder.is_file():  # a run folder from before the table was kept in parts
            legacy = folder.with_name(".legacy-" + CLIENTS)
            folder.rename(legacy)
            folder.mkdir()
            legacy.rename(folder / "part-000000.parquet")
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)
            return
        for stale in folder.glob(".*"):  # a part whose writing was cut short
            stale.unlink()
        start = 0
        for part in sorted(folder.glob("part-*.parquet")):
            rows = pq.read_metadata(part).num_rows
            if start + rows > keep:
                if start >= keep:
                    part.unlink()
                    continue
                _write_table(pq.read_table(part).slice(0, keep - start), part)
                rows = keep - start
            self._parts.append((part, rows))
            start += rows
        self._rows_written = start
        if not self._parts:
            return
        # A crash while a widening rewrote the parts can leave them with different column types: widen again.
        head = pd.concat([pq.read_schema(p).empty_table().to_pandas() for p, _ in self._parts], ignore_index=True)
        self._head, self._schema = head, _schema(head, [], dict(head.dtypes), None)
        if any(not pq.read_schema(p).equals(self._schema) for p, _ in self._parts):
            self._widen(dict(head.dtypes), self._schema)


def last_checkpoint(run_dir: Path) -> dict | None:
    """The newest checkpoint of the run that loads and passes its checksum; a damaged one is reported and
    the one before it taken. None: the run has none yet."""
    paths = [p for p in (run_dir / CHECKPOINT, checkpoint.previous(run_dir / CHECKPOINT)) if p.exists()]
    damaged = []
    for path in paths:
        try:
            saved = checkpoint.load(path)
        except ValueError as err:
            log.warning("%s", err)
            damaged.append(str(err))
            continue
        if damaged:
            log.warning("going on from the checkpoint before it, %s", path.name)
        return saved
    if damaged:
        raise checkpoint.DamagedCheckpoint("no sound checkpoint to go on from: " + "; ".join(damaged))
    return None


def _schema(head: pd.DataFrame, frames: list[pd.DataFrame], dtypes: dict, written: pa.Schema | None) -> pa.Schema:
    """The Arrow schema of the widened columns, from a row of each frame; a column of None alone says
    nothing of its type, so it keeps the type already written."""
    sample = pd.concat([head] + [f.iloc[:1] for f in frames], ignore_index=True).astype(dtypes)
    schema = pa.Schema.from_pandas(sample, preserve_index=False)
    if written is not None:
        for i, field in enumerate(schema):
            if pa.types.is_null(field.type) and field.name in written.names:
                schema = schema.set(i, written.field(field.name))
    return schema


def _as_schema(frame: pd.DataFrame, dtypes: dict, schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pandas(frame.astype(dtypes), schema=schema, preserve_index=False)


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    _write_table(pa.Table.from_pandas(frame, preserve_index=False), path)


def _write_table(table: pa.Table, path: Path) -> None:
    """Write to a hidden temporary name and rename, so a reader never sees half a file; a write that fails
    (a full disk) leaves no temporary file behind."""
    tmp = path.with_name("." + path.name + ".tmp")
    try:
        pq.write_table(table, tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


class NotARunFolder(ValueError):
    """A folder given as a run's holds no run (the CLI reports it as bad input)."""


def load_run(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    run_dir = Path(run_dir)
    if not (run_dir / "rounds.parquet").is_file():
        raise NotARunFolder(f"{run_dir}: not a run folder (no rounds.parquet)")
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    return pd.read_parquet(run_dir / "rounds.parquet"), pd.read_parquet(run_dir / "clients.parquet"), summary
