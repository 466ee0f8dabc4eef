"""Soak: does a long run leak? 2,000 systems-only rounds (timing, bytes and energy; nothing trained) of the
quickstart scenario on a fleet of 10,000 devices, 50 updates a round, with a checkpoint every 5 rounds,
recorded to a run folder by `run_scenario` exactly as `fedfleet run` records one. A callback on each round's
row samples the process.

Prints, every `--every` rounds: RSS split into anonymous memory and file pages, open file descriptors (from
/proc/self/fd), the run folder's files and bytes on disk, the checkpoint file's size, and the wall seconds
per round since the last sample. Then the growth of each from the end of the first quarter of the run to its
end (memory in MB and MB per 1,000 rounds): anything but noise means something accumulates per round. Then
the wall time per round in the first quarter against the last quarter, overall, for rounds that wrote a
checkpoint and for the others: a late/early ratio well above 1 is work that grows with the run (a file
rewritten whole each round, a journal saved whole at each checkpoint). Last, what the folder holds when the
run is over, read back with `load_run`.

About two minutes on 2 cores at the defaults. The run folder is a temporary one unless `--dir` names
where to create it.

    python benchmarks/soak.py [--rounds 2000] [--devices 10000] [--cohort 50] [--checkpoint-every 5]
        [--every 100] [--dir DIR]
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analysis import recorder as recorder_module
from analysis.recorder import load_run
from procfs import folder_files, memory_mb, open_fds
from scenarios.loader import load_scenario
from scenarios.runner import RunOptions, run_scenario


@dataclass
class Sample:
    round: int
    mem: dict[str, float]
    fds: int
    files: int
    folder_mb: float
    checkpoint_mb: float
    wall_s: float


class Sampler:
    """The `on_round` callback: a timestamp for every row, the process's state every `every` rounds."""

    def __init__(self, run_dir: Path, every: int):
        self.run_dir, self.every = run_dir, every
        self.checkpoint = run_dir / getattr(recorder_module, "CHECKPOINT", "checkpoint.safetensors")
        self.stamps: dict[int, float] = {}
        self.samples: list[Sample] = []
        self.start = time.perf_counter()

    def __call__(self, row: dict) -> None:
        rnd = row["round"]
        self.stamps[rnd] = time.perf_counter()
        if rnd % self.every == 0 and rnd > 0:
            files, mb = folder_files(self.run_dir)
            size = self.checkpoint.stat().st_size / 2**20 if self.checkpoint.exists() else 0.0
            self.samples.append(Sample(rnd, memory_mb(), open_fds(), files, mb, size,
                                       self.stamps[rnd] - self.start))


def per_round_seconds(stamps: dict[int, float]) -> dict[int, float]:
    """Wall seconds each round took: from the previous row to its own (rows come in round order)."""
    rounds = sorted(stamps)
    return {r: stamps[r] - stamps[p] for p, r in zip(rounds, rounds[1:])}


def print_samples(samples: list[Sample], before: dict[str, float], fds_before: int) -> None:
    print(f"before the run: RSS {before['VmRSS']:.0f} MB, anonymous {before['RssAnon']:.0f} MB, "
          f"file {before['RssFile']:.0f} MB, fds {fds_before}")
    print(f"{'round':>5} {'RSS MB':>7} {'anon MB':>8} {'file MB':>8} {'peak MB':>8} {'fds':>5} {'files':>6} "
          f"{'folder MB':>10} {'ckpt MB':>8} {'ms/round':>9} {'wall s':>7}")
    previous = None
    for s in samples:
        m = s.mem
        pace = "" if previous is None else f"{1e3 * (s.wall_s - previous.wall_s) / (s.round - previous.round):.1f}"
        print(f"{s.round:>5} {m['VmRSS']:>7.0f} {m['RssAnon']:>8.0f} {m['RssFile']:>8.0f} {m['VmHWM']:>8.0f} "
              f"{s.fds:>5} {s.files:>6} {s.folder_mb:>10.1f} {s.checkpoint_mb:>8.2f} {pace:>9} {s.wall_s:>7.0f}")
        previous = s
    print("files, folder MB: the run folder's; ckpt MB: the checkpoint file's size; ms/round: since the last sample")


def print_growth(samples: list[Sample], rounds: int) -> None:
    """From the sample at (or first after) the end of the first quarter to the last."""
    quarter = next((s for s in samples if s.round >= rounds // 4), None)
    end = samples[-1] if samples else None
    if quarter is None or end is None or end.round == quarter.round:
        print("growth: too few samples to say")
        return
    span = end.round - quarter.round
    memory = ", ".join(f"{name} {end.mem[k] - quarter.mem[k]:+.0f} MB "
                       f"({(end.mem[k] - quarter.mem[k]) * 1000 / span:+.1f} MB per 1,000 rounds)"
                       for k, name in (("VmRSS", "RSS"), ("RssAnon", "anonymous"), ("RssFile", "file pages")))
    print(f"growth from round {quarter.round} to {end.round}: {memory}")
    print(f"  open fds {end.fds - quarter.fds:+d} ({quarter.fds} -> {end.fds}); run folder files "
          f"{end.files - quarter.files:+d} ({quarter.files} -> {end.files}), {end.folder_mb - quarter.folder_mb:+.1f} "
          f"MB; checkpoint file {quarter.checkpoint_mb:.2f} -> {end.checkpoint_mb:.2f} MB")


def print_pace(seconds: dict[int, float], rounds: int, every: int) -> None:
    """Time per round early against late, apart for rounds that wrote a checkpoint."""
    q = max(rounds // 4, 1)
    early = {r: s for r, s in seconds.items() if r <= q}
    late = {r: s for r, s in seconds.items() if r > rounds - q}
    print(f"wall time per round, rounds 1..{q} against {rounds - q + 1}..{rounds} (mean, median, max in ms):")
    for label, keep in (("all rounds", lambda r: True), ("checkpoint rounds", lambda r: every and r % every == 0),
                        ("other rounds", lambda r: not (every and r % every == 0))):
        a = np.array([s for r, s in early.items() if keep(r)]) * 1e3
        b = np.array([s for r, s in late.items() if keep(r)]) * 1e3
        if not len(a) or not len(b):
            continue
        print(f"  {label:<18} {a.mean():7.1f} {np.median(a):7.1f} {a.max():7.1f}   ->  {b.mean():7.1f} "
              f"{np.median(b):7.1f} {b.max():7.1f}   late/early (mean) x{b.mean() / a.mean():.2f}")


def print_folder(run_dir: Path, rounds: int) -> None:
    table, sessions, summary = load_run(run_dir)
    files, mb = folder_files(run_dir)
    left = sorted(p.name for p in run_dir.iterdir())
    order = f"rounds 0..{rounds} each once" if list(table["round"]) == list(range(rounds + 1)) else "NOT in order"
    print(f"run folder after the run: {len(table)} round rows ({order}), {len(sessions):,} sessions, summary with "
          f"{len(summary)} fields; {files} files, {mb:.1f} MB: {', '.join(left)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--cohort", type=int, default=50, help="updates a round waits for (run.clients_per_round)")
    parser.add_argument("--checkpoint-every", type=int, default=5, help="the scenario's run.checkpoint_every")
    parser.add_argument("--every", type=int, default=100, help="rounds between samples")
    parser.add_argument("--dir", type=Path, help="where to create the run folder (default: a temporary one)")
    args = parser.parse_args()
    scenario = load_scenario("quickstart", [
        "name=soak", "run.mode=systems", f"run.rounds={args.rounds}", f"fleet.size={args.devices}",
        f"run.clients_per_round={args.cohort}", f"run.checkpoint_every={args.checkpoint_every}",
        "output.report=false",
    ])
    gc.collect()
    before, fds_before = memory_mb(), open_fds()
    wall_start = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        run_dir = Path(tmp) / "run"
        sampler = Sampler(run_dir, args.every)
        run_scenario(scenario, RunOptions(out=run_dir, progress=False, on_round=sampler))
        wall = time.perf_counter() - wall_start
        gc.collect()
        after, fds_after = memory_mb(), open_fds()
        print(f"soak: {args.rounds:,} systems-only rounds, {args.devices:,} devices, {args.cohort} updates a round, "
              f"checkpoint every {args.checkpoint_every}; wall {wall:.0f} s ({1e3 * wall / args.rounds:.1f} ms a round "
              "with assembly)")
        print_samples(sampler.samples, before, fds_before)
        print_growth(sampler.samples, args.rounds)
        print_pace(per_round_seconds(sampler.stamps), args.rounds, args.checkpoint_every)
        print(f"after run_scenario returned: RSS {after['VmRSS']:.0f} MB, anonymous {after['RssAnon']:.0f} MB, "
              f"fds {fds_after} ({fds_after - fds_before:+d} against before the run)")
        print_folder(run_dir, args.rounds)


if __name__ == "__main__":
    main()
