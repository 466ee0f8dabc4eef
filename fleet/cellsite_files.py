"""The cell-site logs as files: a JSONL file that fleet.data.jsonl_clients reads (one client per site) and a
CSV of the fault events, with the truth about every line.

    python -m fleet.cellsite_files --sites 1000 --days 7 --seed 0 --out DIR
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

from fleet.cellsite import CHUNK_LINES, CellSiteConfig, CellSiteLogs, generate, to_clients
from fleet.cellsite_faults import FaultKind


def write_jsonl(logs: CellSiteLogs, path: Path, chunk_lines: int = CHUNK_LINES, test_days: int = 0) -> int:
    """One {"client_id": site, "text": chunk} record per chunk, as fleet.data.jsonl_clients reads them;
    returns the number of records."""
    count = 0
    with open(path, "w", encoding="utf-8") as fh:
        for client in to_clients(logs, chunk_lines, test_days):
            for chunk in client.lines:
                fh.write(json.dumps({"client_id": client.client_id, "text": "\n".join(chunk)}) + "\n")
                count += 1
    return count


def write_labels(logs: CellSiteLogs, path: Path) -> None:
    """CSV of fault events: site, site_type, kind, start, end (ISO minutes, UTC), sectors (";"-separated), detail."""
    with open(path, "w", encoding="utf-8", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["site", "site_type", "kind", "start", "end", "sectors", "detail"])
        for site in logs.sites:
            for f in site.faults:
                out.writerow([f.site, site.site_type.value, f.kind.name.lower(), f"{f.start:%Y-%m-%dT%H:%M}Z",
                              f"{f.end:%Y-%m-%dT%H:%M}Z", ";".join(map(str, f.sectors)), f.detail])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fleet.cellsite_files", description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=100)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--period-min", type=int, default=15)
    parser.add_argument("--fault-rate", type=float, default=0.15, help="faults per site per day")
    parser.add_argument("--test-days", type=int, default=0, help="last days left out of the JSONL")
    parser.add_argument("--chunk-lines", type=int, default=CHUNK_LINES, help="lines per JSONL record")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.chunk_lines < 1:
        parser.error(f"--chunk-lines must be at least 1, got {args.chunk_lines}")
    if not 0 <= args.test_days < args.days:
        parser.error(f"--test-days must be from 0 to days - 1 = {args.days - 1}, got {args.test_days}")
    try:
        config = CellSiteConfig(sites=args.sites, days=args.days, period_min=args.period_min,
                                fault_rate_per_day=args.fault_rate)
    except ValueError as err:
        parser.error(str(err))
    began = time.perf_counter()
    logs = generate(config, args.seed)
    generated = time.perf_counter() - began
    args.out.mkdir(parents=True, exist_ok=True)
    records = write_jsonl(logs, args.out / "cellsite.jsonl", args.chunk_lines, args.test_days)
    write_labels(logs, args.out / "faults.csv")
    lines = sum(len(s.lines) for s in logs.sites)
    faulty = sum(int((s.labels != FaultKind.NORMAL).sum()) for s in logs.sites)
    kinds = {k.name.lower(): sum(f.kind is k for f in logs.faults) for k in list(FaultKind)[1:]}
    print(f"{config.sites} sites x {config.days} days: {lines} lines ({faulty / lines:.1%} in faults), "
          f"{records} JSONL records; fault events {kinds}")
    print(f"generated in {generated:.1f} s, written in {time.perf_counter() - began - generated:.1f} s to {args.out}")


if __name__ == "__main__":
    main()
