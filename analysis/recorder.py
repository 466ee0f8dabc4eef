"""The run folder, written as the run goes.

    RUN_DIR/
      scenario.resolved.yaml   every field, defaults included, plus the seed actually used
      rounds.parquet           one row per round (server version), rewritten after each round
      clients.parquet          one row per client session, rewritten every `flush_every` rounds
      checkpoint.safetensors   what a resumed run needs (analysis/checkpoint.py), while the run is going; removed
                               once summary.json is written
      summary.json             headline figures, written at the end
      adapter/                 the final global adapter in PEFT format
      report.html              figures (analysis.report)

Memory: the rows of rounds stay in memory (one per server version, a few kB each); the sessions do not.
Sessions wait in memory only until the next flush (at most `flush_every` rounds or `flush_rows` rows),
then clients.parquet is rewritten as what it held plus the waiting sessions, one row group at a time, so
the driver never holds the whole table however many sessions a run has. Read back, the table equals the
concatenation of every round's sessions (pandas.concat): a column whose type widens in a later round (an
integer column that meets a float, or an empty round) is widened in the rows already written as well.

A checkpoint says how many rows of each table it covers; a resumed run (`RunRecorder.reopen`) cuts the
tables back to those rows, since the run may have recorded more before it stopped.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from analysis import checkpoint

CHECKPOINT = "checkpoint.safetensors"


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
        self._rows_written = 0

    @classmethod
    def reopen(cls, run_dir: Path) -> tuple["RunRecorder", dict | None]:
        """The recorder of a stopped run, its tables cut back to its last checkpoint, and the emulator's state
        saved there; without a checkpoint, empty tables and None (the run starts again)."""
        recorder = cls(run_dir, None)
        path = recorder.dir / CHECKPOINT
        saved = checkpoint.load(path) if path.exists() else {"rounds": 0, "sessions": 0, "emulator": None}
        rounds = recorder.dir / "rounds.parquet"
        if saved["rounds"]:
            recorder.rounds_rows = pd.read_parquet(rounds).iloc[: saved["rounds"]].to_dict("records")
            _write_parquet(pd.DataFrame(recorder.rounds_rows), rounds)
        else:
            rounds.unlink(missing_ok=True)
        clients = recorder.dir / "clients.parquet"
        if clients.exists() and saved["emulator"] is not None:
            table = pq.read_table(clients).slice(0, saved["sessions"])
            tmp = clients.with_suffix(".tmp")
            pq.write_table(table, tmp)
            tmp.replace(clients)
            recorder._head, recorder._rows_written = table.slice(0, 0).to_pandas(), table.num_rows
        else:
            clients.unlink(missing_ok=True)
        return recorder, saved["emulator"]

    def checkpoint(self, state: dict) -> None:
        """Save the emulator's state with the rows it covers, clients.parquet flushed first."""
        self.flush()
        checkpoint.save(self.dir / CHECKPOINT, {"emulator": state, "rounds": len(self.rounds_rows),
                                                "sessions": self._rows_written})

    def round(self, row: dict) -> None:
        self.rounds_rows.append(row)
        _write_parquet(pd.DataFrame(self.rounds_rows), self.dir / "rounds.parquet")
        if len(self.rounds_rows) % self.flush_every == 0:
            self.flush()

    def sessions(self, columns: dict[str, list]) -> None:
        """One round's sessions, as columns."""
        frame = pd.DataFrame(columns)
        self._waiting.append(frame)
        self._waiting_rows += len(frame)
        if self._waiting_rows >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        """Rewrite clients.parquet with the waiting sessions appended."""
        path = self.dir / "clients.parquet"
        if not self._waiting and self._head is not None:
            return
        heads = ([] if self._head is None else [self._head]) + [f.iloc[:0] for f in self._waiting]
        head = pd.concat(heads, ignore_index=True) if heads else pd.DataFrame()
        dtypes = dict(head.dtypes)
        frames = [f for f in self._waiting if len(f)]
        if not frames and not self._rows_written:  # no session yet: the empty table pandas.concat gives
            _write_parquet(head, path)
        elif frames or dtypes != dict(self._head.dtypes):
            old = pq.ParquetFile(path) if self._rows_written else None
            schema = _schema(head, frames, dtypes, None if old is None else old.schema_arrow)
            tmp = path.with_suffix(".tmp")
            with pq.ParquetWriter(tmp, schema) as writer:
                for i in range(0 if old is None else old.num_row_groups):
                    writer.write_table(_as_schema(old.read_row_group(i).to_pandas(), dtypes, schema))
                for frame in frames:
                    writer.write_table(_as_schema(frame, dtypes, schema))
            tmp.replace(path)
        self._head, self._rows_written = head, self._rows_written + sum(len(f) for f in frames)
        self._waiting, self._waiting_rows = [], 0

    def sessions_frame(self, columns: list[str] | None = None) -> pd.DataFrame:
        """Every session recorded so far (only `columns`, where given), read back from clients.parquet."""
        self.flush()
        if not self._rows_written:
            return self._head if columns is None else self._head[columns]
        return pd.read_parquet(self.dir / "clients.parquet", columns=columns)

    def close(self, summary: dict) -> None:
        _write_parquet(pd.DataFrame(self.rounds_rows), self.dir / "rounds.parquet")
        self.flush()
        (self.dir / "summary.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
        (self.dir / CHECKPOINT).unlink(missing_ok=True)  # the run is complete: nothing to resume


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
    """Write to a temporary name and rename, so a reader never sees half a file."""
    tmp = path.with_suffix(".tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)


class NotARunFolder(ValueError):
    """A folder given as a run's holds no run (the CLI reports it as bad input)."""


def load_run(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    run_dir = Path(run_dir)
    if not (run_dir / "rounds.parquet").is_file():
        raise NotARunFolder(f"{run_dir}: not a run folder (no rounds.parquet)")
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    return pd.read_parquet(run_dir / "rounds.parquet"), pd.read_parquet(run_dir / "clients.parquet"), summary
