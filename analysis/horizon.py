"""Per-hour figures of a plan's horizon run (scenarios/horizon.py): the synchronous rounds of whole simulated
hours, back to back from t = 0, which is midnight of the reference time zone (fleet/availability.py).

Each round belongs to the hour in which it opened, and each session to its round's hour, so a round that
runs past the end of an hour is counted whole in the hour it started. Per hour:

- round duration: the p50 and p95 of the time to the K-th report (analysis.capacity: a round short of K
  reports is unbounded), and how many rounds fell short;
- participation: devices invited (every session of the hour's rounds), reports completed, and their ratio;
- cell load: megabytes that crossed each cell's air (uplink as devices sent it, downlink as the cell sent
  it; servers at the site use the backhaul), mean over every cell and the busiest cell (-1: no traffic).

The busy hour is the hour with the highest mean cell load, uplink plus downlink (the fleet's traffic over
the air); the earliest such hour on a tie.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.capacity import percentile, round_durations

HOUR_S = 3600.0
SESSION_COLUMNS = ["round", "cell", "bytes_up_air", "bytes_down_air"]
HOUR_COLUMNS = ["hour", "hour_of_day", "rounds", "p50_s", "p95_s", "short_rounds", "invited", "completed",
                "completion_rate", "uplink_mb_mean", "uplink_mb_peak", "downlink_mb_mean", "downlink_mb_peak",
                "load_mb_mean", "load_mb_peak", "busiest_cell"]


def round_hours(rounds: pd.DataFrame) -> pd.Series:
    """The hour (0, 1, ...) in which each round opened, indexed by round number; round 0 (the server's
    starting row) is left out."""
    done = rounds[rounds["round"] > 0]
    return pd.Series((done["t_start"].to_numpy() // HOUR_S).astype(np.int64), index=done["round"].to_numpy(),
                     name="hour")


def duration_columns(rounds: pd.DataFrame, hours: pd.Series, k: int, n_hours: int) -> pd.DataFrame:
    """Per hour: rounds opened, the p50 and p95 of their time to K reports (inf: unbounded; NaN: no round
    opened that hour) and how many fell short of K."""
    done = rounds[rounds["round"] > 0]
    durations = pd.Series(round_durations(done, k), index=hours.index)
    rows = []
    for hour in range(n_hours):
        d = durations[hours == hour].to_numpy()
        rows.append({"rounds": len(d), "p50_s": percentile(d, 50) if len(d) else np.nan,
                     "p95_s": percentile(d, 95) if len(d) else np.nan, "short_rounds": int(np.isinf(d).sum())})
    return pd.DataFrame(rows)


def participation_columns(rounds: pd.DataFrame, hours: pd.Series, n_hours: int) -> pd.DataFrame:
    """Per hour: sessions invited (a synchronous round's sessions all end by its close, so its `selected`
    counts every device it invited), reports completed and their ratio (NaN when nobody was invited)."""
    done = rounds[rounds["round"] > 0].assign(hour=hours.to_numpy())
    sums = done.groupby("hour")[["selected", "completed"]].sum().reindex(range(n_hours), fill_value=0)
    invited, completed = sums["selected"].astype(int), sums["completed"].astype(int)
    return pd.DataFrame({"invited": invited.to_numpy(), "completed": completed.to_numpy(),
                         "completion_rate": (completed / invited.where(invited > 0)).to_numpy()})


def load_columns(sessions: pd.DataFrame, hours: pd.Series, cells: int, n_hours: int) -> pd.DataFrame:
    """Per hour: megabytes over each cell's air, every cell counted (idle ones as 0): mean and busiest cell,
    uplink, downlink and both."""
    # A round with no session makes clients.parquet's integer columns floats (analysis/recorder.py).
    rounds, cell = sessions["round"].to_numpy().astype(np.int64), sessions["cell"].to_numpy().astype(np.int64)
    hour = hours.loc[rounds].to_numpy()  # every session belongs to a recorded round
    index = pd.MultiIndex.from_product([range(n_hours), range(cells)], names=["hour", "cell"])
    air = sessions[["bytes_up_air", "bytes_down_air"]].assign(hour=hour, cell=cell)
    per_cell = air.groupby(["hour", "cell"]).sum().reindex(index, fill_value=0) / 1e6
    up = per_cell["bytes_up_air"].unstack("cell").to_numpy(dtype=float)  # (hours, cells) MB
    down = per_cell["bytes_down_air"].unstack("cell").to_numpy(dtype=float)
    both = up + down
    return pd.DataFrame({"uplink_mb_mean": up.mean(axis=1), "uplink_mb_peak": up.max(axis=1),
                         "downlink_mb_mean": down.mean(axis=1), "downlink_mb_peak": down.max(axis=1),
                         "load_mb_mean": both.mean(axis=1), "load_mb_peak": both.max(axis=1),
                         "busiest_cell": np.where(both.max(axis=1) > 0, both.argmax(axis=1), -1)})


def hourly_table(rounds: pd.DataFrame, sessions: pd.DataFrame, k: int, cells: int, n_hours: int) -> pd.DataFrame:
    """One row per simulated hour 0 .. n_hours - 1, the columns HOUR_COLUMNS. `sessions` needs the columns
    SESSION_COLUMNS of clients.parquet."""
    hours = round_hours(rounds)
    if len(hours) and hours.max() >= n_hours:
        raise ValueError(f"a round opened in hour {hours.max()}, past the {n_hours} hours of the horizon")
    table = pd.concat([duration_columns(rounds, hours, k, n_hours), participation_columns(rounds, hours, n_hours),
                       load_columns(sessions, hours, cells, n_hours)], axis=1)
    table.insert(0, "hour", range(n_hours))
    table.insert(1, "hour_of_day", table["hour"] % 24)
    return table[HOUR_COLUMNS]


def busy_hour(table: pd.DataFrame) -> int:
    """The hour with the highest mean cell load, uplink plus downlink; the earliest on a tie."""
    return int(table["hour"].iloc[int(np.argmax(table["load_mb_mean"].to_numpy()))])
