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
        self.session_rows: list[dict] = []
        self.flush_every = flush_every

    def round(self, row: dict) -> None:
        self.rounds_rows.append(row)
        _write_parquet(self.rounds_rows, self.dir / "rounds.parquet")
        if len(self.rounds_rows) % self.flush_every == 0:
            _write_parquet(self.session_rows, self.dir / "clients.parquet")

    def sessions(self, rows: list[dict]) -> None:
        self.session_rows.extend(rows)

    def close(self, summary: dict) -> None:
        _write_parquet(self.rounds_rows, self.dir / "rounds.parquet")
        _write_parquet(self.session_rows, self.dir / "clients.parquet")
        (self.dir / "summary.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")


def _write_parquet(rows: list[dict], path: Path) -> None:
    """Write to a temporary name and rename, so a reader never sees half a file."""
    tmp = path.with_suffix(".tmp")
    pd.DataFrame(rows).to_parquet(tmp, index=False)
    tmp.replace(path)


def load_run(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    run_dir = Path(run_dir)
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    return pd.read_parquet(run_dir / "rounds.parquet"), pd.read_parquet(run_dir / "clients.parquet"), summary
