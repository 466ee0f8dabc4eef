"""The run folder, written as the run goes.

    RUN_DIR/
      scenario.resolved.yaml   every field, defaults included, plus the seed actually used
      rounds.parquet           one row per round (server version), rewritten after each round
      clients.parquet          one row per client session
      summary.json             headline figures, written at the end
      adapter/                 the final global adapter in PEFT format
      report.html              figures (analysis.report)
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml


class RunRecorder:
    def __init__(self, run_dir: Path, resolved: dict, flush_every: int = 5):
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=False)
        (self.dir / "scenario.resolved.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
        self.rounds_rows: list[dict] = []
        self._session_frames: list[pd.DataFrame] = []
        self.flush_every = flush_every

    def round(self, row: dict) -> None:
        self.rounds_rows.append(row)
        _write_parquet(pd.DataFrame(self.rounds_rows), self.dir / "rounds.parquet")
        if len(self.rounds_rows) % self.flush_every == 0:
            _write_parquet(self.sessions_frame(), self.dir / "clients.parquet")

    def sessions(self, columns: dict[str, list]) -> None:
        """One round's sessions, as columns."""
        self._session_frames.append(pd.DataFrame(columns))

    def sessions_frame(self) -> pd.DataFrame:
        if not self._session_frames:
            return pd.DataFrame()
        if len(self._session_frames) > 1:  # concatenate once, keep one frame
            self._session_frames = [pd.concat(self._session_frames, ignore_index=True)]
        return self._session_frames[0]

    def close(self, summary: dict) -> None:
        _write_parquet(pd.DataFrame(self.rounds_rows), self.dir / "rounds.parquet")
        _write_parquet(self.sessions_frame(), self.dir / "clients.parquet")
        (self.dir / "summary.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    """Write to a temporary name and rename, so a reader never sees half a file."""
    tmp = path.with_suffix(".tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)


def load_run(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    run_dir = Path(run_dir)
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    return pd.read_parquet(run_dir / "rounds.parquet"), pd.read_parquet(run_dir / "clients.parquet"), summary
