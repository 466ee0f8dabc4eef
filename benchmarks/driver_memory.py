"""How much memory does the driver itself need for a large fleet, and what do its checkpoints and a resume
cost? The emulator runs a fleet of 100,000 devices for 200 synchronous rounds under FedSA-LoRA (each device
keeps its LoRA B as a personal part) with 8-bit quantised uploads and error feedback (a residual per device),
recording to a run folder and checkpointing every `--checkpoint-every` rounds as a real run does, with the
per-device state in files under it. Training is replaced by a host that returns seeded random deltas of the
real adapter's size at once, so only the driver's own state grows: the fleet table, personal parts,
residuals, records.

Prints:
- every `--every` rounds: the resident memory (RSS), split into anonymous memory (the process's own) and
  file pages (the state files mapped in, which the kernel may drop and read back), the peak RSS, each against
  the baseline measured after the fleet and the emulator were built; open file descriptors; the devices
  holding a personal part and a residual; the state's bytes on disk; wall time;
- the growth of RSS, anonymous memory and file pages from round `--settle` to the end, in MB and MB per 100
  rounds: anonymous memory is what must stay flat once the state is on disk;
- the checkpoints: size (mean, max, last), seconds to write (mean, max), split into flushing clients.parquet
  and saving the checkpoint file, the bytes written over the run, and the run folder's size on disk;
- a resume: the run is stopped `--stop-after` rounds past round `--rounds`, between checkpoints (an exception
  out of the progress callback, as a crash would stop it: nothing is killed, and no checkpoint is written at
  the stop), everything it built is dropped, and the run folder is
  reopened as `fedfleet run --resume` does (a fresh assembly, `RunRecorder.reopen`, an emulator given the
  saved state). Prints the seconds to reopen, to replay the clock to the checkpoint and to load the saved
  state, the memory once live, then runs on to round `--rounds` + `--continue` and prints the memory and open
  file descriptors with the saved state still referenced (as the runner keeps it) and without it; last, it
  says whether the rounds recorded again after the checkpoint equal those recorded before the stop.

At the defaults (100 updates a round: about 18,000 devices hold state after 200 rounds, 4 GB of it) the
run takes about six minutes on 2 cores, half of it writing checkpoints, and needs about 16 GB of free disk
(the state, the checkpoint, the previous one kept beside it and the next one's temporary file). A cohort of
1,000 leaves state with most of the fleet and needs several times that. The run folder is a temporary one
unless `--dir` names where to create it.

    python benchmarks/driver_memory.py [--devices 100000] [--rounds 200] [--cohort 100] [--checkpoint-every 10]
        [--every 10] [--settle 50] [--stop-after 3] [--continue 10] [--dir DIR]
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from analysis import recorder as recorder_module
from analysis.recorder import RunRecorder, load_run
from fleet.trainer import TrainResult
from procfs import deleted_mapped_mb, disk_mb, memory_mb, open_fds
from scenarios.assembly import assemble
from scenarios.loader import load_scenario


class InstantHost:
    """Trains nothing: a job's delta is drawn from a stream keyed by (client, round), of the adapter's size."""

    def __init__(self, size: int):
        self.size = size

    def put(self, tensor):
        return tensor

    def train(self, job, start, base_delta):
        g = torch.Generator().manual_seed(job.client * 100_003 + job.round)
        return TrainResult(job, torch.randn(self.size, generator=g) * 1e-3, 100, 2.0, 1.9)

    def evaluate(self, adapter, base_delta):
        return 2.0

    def evaluate_clients(self, adapter, groups, clients, n_windows, base_delta):
        return [(2.0, 2.0)] * len(clients)

    def get(self, handles):
        return list(handles)


class Stopped(Exception):
    """Raised out of the progress callback to stop a run between checkpoints, as a kill would."""


# --- measurements ---------------------------------------------------------------------------------


@dataclass
class Sample:
    round: int
    mem: dict[str, float]
    fds: int
    personal: int  # devices holding a personal part
    residual: int  # devices holding a residual
    state_mb: float
    wall_s: float


@dataclass
class Checkpoint:
    round: int
    bytes: int
    flush_s: float  # clients.parquet brought up to date, which a checkpoint does first
    save_s: float  # the checkpoint file written and synced
    folder_mb: float  # the run folder on disk just after: state, checkpoints (the previous one kept), tables


class TimedSink:
    """The run's recorder, with each checkpoint timed and sized; rows and sessions pass straight through."""

    def __init__(self, recorder: RunRecorder, run_dir: Path):
        self.recorder = recorder
        self.path = run_dir / getattr(recorder_module, "CHECKPOINT", "checkpoint.safetensors")
        self.checkpoints: list[Checkpoint] = []
        self.sessions_recorded = 0
        self._last_round = -1

    def round(self, row: dict) -> None:
        self._last_round = row["round"]
        self.recorder.round(row)

    def sessions(self, columns: dict[str, list]) -> None:
        self.sessions_recorded += len(next(iter(columns.values()), []))
        self.recorder.sessions(columns)

    def checkpoint(self, state: dict) -> None:
        t0 = time.perf_counter()
        self.recorder.flush()  # what `checkpoint` does first; timed apart, as it grows with the sessions
        t1 = time.perf_counter()
        self.recorder.checkpoint(state)
        t2 = time.perf_counter()
        size = self.path.stat().st_size
        self.checkpoints.append(Checkpoint(self._last_round, size, t1 - t0, t2 - t1, disk_mb(self.path.parent)))


# --- the run, its stop and its resume --------------------------------------------------------------


def build_scenario(args):
    """The scenario both the first run and the resumed one run: it goes on `--continue` rounds past the
    measured ones, so the resumed run has rounds of its own."""
    return load_scenario("quickstart", [
        "name=driver_memory", f"fleet.size={args.devices}", f"run.rounds={args.rounds + args.continue_}",
        f"run.clients_per_round={args.cohort}", "run.deadline_s=600", "run.eval_every=10", "network.cells=100",
        f"run.checkpoint_every={args.checkpoint_every}",
        "strategy.name=fedsa_lora", "strategy.compression.name=q8", "output.report=false",
    ])


@dataclass
class FirstRun:
    start: dict[str, float]  # memory before building
    base: dict[str, float]  # memory after the fleet and the emulator were built
    samples: list[Sample]
    checkpoints: list[Checkpoint]
    tail: list[dict]  # rows recorded after the last checkpoint, before the stop
    sessions: int
    wall_s: float
    layout_size: int
    shared: int
    personal_values: int
    bytes_per_device: tuple[float, float]  # personal, residual store bytes per device holding a row
    fleet: int
    able: int


def first_run(args, scenario, run_dir: Path) -> FirstRun:
    """Run until the stop, sampling memory; everything it built is dropped when this returns."""
    start = memory_mb()
    run = assemble(scenario)  # the scenario's fleet, strategy, codec and ranks, as a run builds them
    run.server_model = None  # only the final save needs it
    clients = run.client_side(run_dir / "state")  # where the runner puts it
    samples: list[Sample] = []
    rows: list[dict] = []
    stop_at = args.rounds + args.stop_after
    wall_start = time.perf_counter()

    def progress(row: dict) -> None:
        rows.append(row)
        rnd = row["round"]
        if rnd % args.every == 0 and 0 < rnd <= args.rounds:
            samples.append(Sample(rnd, memory_mb(), open_fds(), len(clients.personal), len(clients.codec.residual),
                                  disk_mb(run_dir / "state"), time.perf_counter() - wall_start))
        if rnd == stop_at:
            raise Stopped

    sink = TimedSink(RunRecorder(run_dir, {"name": scenario.name}), run_dir)
    emulator = run.emulator(clients, InstantHost(run.layout.size), sink, on_progress=progress)
    base = memory_mb()
    try:
        emulator.run()
    except Stopped:
        pass
    last = sink.checkpoints[-1].round
    per_device = (clients.personal.nbytes / max(len(clients.personal), 1),
                  clients.codec.residual.nbytes / max(len(clients.codec.residual), 1))
    return FirstRun(start, base, samples, sink.checkpoints, [r for r in rows if r["round"] > last],
                    sink.sessions_recorded, time.perf_counter() - wall_start,
                    run.layout.size, int(clients.shared.sum()), int(clients.personal_mask.sum()), per_device,
                    len(run.fleet), int((run.ranks > 0).sum()))


@dataclass
class Resumed:
    before: dict[str, float]  # memory after the first run was dropped
    fds_before: int
    assemble_s: float
    reopen_s: float
    build_s: float
    replay_s: float  # the clock replayed from time 0 to the checkpoint, nothing trained
    load_s: float  # the saved per-device state copied into the new stores
    load_anon_mb: float  # anonymous memory the load added
    live: dict[str, float] = field(default_factory=dict)  # memory right after the load
    continue_s: float = 0.0
    after: dict[str, float] = field(default_factory=dict)
    fds_after: int = 0
    deleted_mb: float = 0.0
    released: dict[str, float] = field(default_factory=dict)  # once the saved state and the emulator are dropped
    fds_released: int = 0
    deleted_released_mb: float = 0.0
    rounds: pd.DataFrame | None = None
    sessions: int = 0


def resume(args, scenario, run_dir: Path) -> Resumed:
    """Go on with the stopped run from its folder, as `fedfleet run --resume` does, to the scenario's end."""
    gc.collect()
    out = Resumed(memory_mb(), open_fds(), 0, 0, 0, 0, 0, 0)
    t0 = time.perf_counter()
    run = assemble(scenario)  # a resumed run assembles its scenario afresh, as any start does
    run.server_model = None
    t1 = time.perf_counter()
    recorder, saved = RunRecorder.reopen(run_dir)
    t2 = time.perf_counter()
    clients = run.client_side(run_dir / "state")
    emulator = run.emulator(clients, InstantHost(run.layout.size), recorder, resume=saved)
    t3 = time.perf_counter()
    out.assemble_s, out.reopen_s, out.build_s = t1 - t0, t2 - t1, t3 - t2
    load = clients.load_state_dict

    def timed_load(state: dict) -> None:
        # Called once, where the replay reaches the checkpoint: splits the replay from the load.
        before = time.perf_counter()
        out.replay_s, anon = before - t3, memory_mb()["RssAnon"]
        load(state)
        out.load_s, out.load_anon_mb = time.perf_counter() - before, memory_mb()["RssAnon"] - anon
        out.live = memory_mb()

    clients.load_state_dict = timed_load  # instrumentation only: the emulator calls it as before
    emulator.run()
    out.continue_s = time.perf_counter() - t3 - out.replay_s - out.load_s
    # Measured before the recorder closes, with `saved` still referenced as the runner keeps it for the run;
    # then without it, to show what holding the saved checkpoint's mappings costs.
    out.after, out.fds_after, out.deleted_mb = memory_mb(), open_fds(), deleted_mapped_mb()
    del saved, emulator
    gc.collect()
    out.released, out.fds_released, out.deleted_released_mb = memory_mb(), open_fds(), deleted_mapped_mb()
    recorder.close({})
    rounds, sessions, _ = load_run(run_dir)
    out.rounds, out.sessions = rounds, len(sessions)
    return out


def differing_columns(before: pd.DataFrame, again: pd.DataFrame) -> list[str]:
    """Columns whose values differ between the rows recorded before the stop and the same rounds recorded
    by the resumed run (NaN equals NaN)."""
    differ = []
    for name in sorted(set(before.columns) | set(again.columns)):
        if name not in before or name not in again:
            differ.append(name)
            continue
        a, b = before[name].to_numpy(), again[name].to_numpy()
        same = (np.array_equal(a, b, equal_nan=True) if a.dtype.kind == "f" and b.dtype.kind == "f"
                else list(a) == list(b))
        if not same:
            differ.append(name)
    return differ


# --- printing -------------------------------------------------------------------------------------


def print_memory(args, first: FirstRun) -> None:
    base = first.base
    print(f"RSS before building: {first.start['VmRSS']:.0f} MB; baseline after fleet and emulator: RSS "
          f"{base['VmRSS']:.0f} MB, anonymous {base['RssAnon']:.0f} MB, file {base['RssFile']:.0f} MB")
    print(f"{'round':>5} {'RSS MB':>7} {'anon MB':>8} {'file MB':>8} {'peak MB':>8} {'RSS+':>6} {'anon+':>6} "
          f"{'file+':>6} {'fds':>5} {'personal':>9} {'residual':>9} {'disk MB':>8} {'wall s':>7}")
    for s in first.samples:
        m = s.mem
        print(f"{s.round:>5} {m['VmRSS']:>7.0f} {m['RssAnon']:>8.0f} {m['RssFile']:>8.0f} {m['VmHWM']:>8.0f} "
              f"{m['VmRSS'] - base['VmRSS']:>6.0f} {m['RssAnon'] - base['RssAnon']:>6.0f} "
              f"{m['RssFile'] - base['RssFile']:>6.0f} {s.fds:>5} {s.personal:>9,} {s.residual:>9,} "
              f"{s.state_mb:>8.0f} {s.wall_s:>7.0f}")
    print("RSS+, anon+, file+: over the baseline's; personal, residual: devices holding one; disk: state files")
    print_growth(args, first.samples)


def print_growth(args, samples: list[Sample]) -> None:
    """Growth from the sample at (or first after) round `--settle` to the last: flat means near zero."""
    settled = next((s for s in samples if s.round >= args.settle), None)
    end = samples[-1] if samples else None
    if settled is None or end is None or end.round == settled.round:
        print(f"growth: too few samples after round {args.settle} to say")
        return
    span = end.round - settled.round
    parts = []
    for key, name in (("VmRSS", "RSS"), ("RssAnon", "anonymous"), ("RssFile", "file pages")):
        grown = end.mem[key] - settled.mem[key]
        parts.append(f"{name} {grown:+.0f} MB ({grown * 100 / span:+.1f} MB per 100 rounds)")
    print(f"growth from round {settled.round} to {end.round}: " + ", ".join(parts) +
          f"; open fds {end.fds - settled.fds:+d}; state on disk {end.state_mb - settled.state_mb:+.0f} MB")


def print_checkpoints(checkpoints: list[Checkpoint]) -> None:
    if not checkpoints:
        print("checkpoints: none")
        return
    sizes = np.array([c.bytes for c in checkpoints]) / 1e9
    flush = np.array([c.flush_s for c in checkpoints])
    save = np.array([c.save_s for c in checkpoints])
    total = flush + save
    last = checkpoints[-1]
    print(f"checkpoints: {len(checkpoints)} (rounds {checkpoints[0].round}..{last.round}); size mean "
          f"{sizes.mean():.2f} GB, max {sizes.max():.2f} GB, last (round {last.round}) {sizes[-1]:.2f} GB; "
          f"{sizes.sum():.1f} GB written in all")
    print(f"checkpoint time: mean {total.mean():.2f} s, max {total.max():.2f} s (round "
          f"{checkpoints[int(total.argmax())].round}); of which flushing clients.parquet mean {flush.mean():.2f} s, "
          f"max {flush.max():.2f} s, saving the file mean {save.mean():.2f} s, max {save.max():.2f} s; "
          f"last {last.flush_s:.2f} + {last.save_s:.2f} s")
    print(f"run folder on disk after a checkpoint: max {max(c.folder_mb for c in checkpoints) / 2**10:.1f} GB "
          f"(state, the checkpoint and the previous one kept beside it, the tables); writing the next checkpoint "
          f"takes its size again for the temporary file")


def print_resume(args, first: FirstRun, again: Resumed) -> None:
    checkpoint_round = first.checkpoints[-1].round
    to_checkpoint = again.reopen_s + again.build_s + again.replay_s + again.load_s
    print(f"stopped after round {args.rounds + args.stop_after}; resumed from the checkpoint at round "
          f"{checkpoint_round}: memory after dropping the first run RSS {again.before['VmRSS']:.0f} MB, anonymous "
          f"{again.before['RssAnon']:.0f} MB, fds {again.fds_before}")
    print(f"resume time to the checkpoint: {to_checkpoint:.1f} s = reopen {again.reopen_s:.1f} s + build "
          f"{again.build_s:.1f} s + replay {again.replay_s:.1f} s + load of the saved state {again.load_s:.1f} s "
          f"(anonymous memory {again.load_anon_mb:+.0f} MB while loading); assembling the scenario before it, as "
          f"any start does: {again.assemble_s:.1f} s")
    live, after = again.live, again.after
    print(f"memory once live: RSS {live['VmRSS']:.0f} MB, anonymous {live['RssAnon']:.0f} MB, file "
          f"{live['RssFile']:.0f} MB; after the continuation: RSS {after['VmRSS']:.0f} MB, anonymous "
          f"{after['RssAnon']:.0f} MB, file {after['RssFile']:.0f} MB, fds {again.fds_after}, deleted files still "
          f"mapped {again.deleted_mb:.0f} MB (the saved state still referenced, as the runner keeps it)")
    gone = again.released
    print(f"once the saved state and the emulator are dropped: RSS {gone['VmRSS']:.0f} MB, anonymous "
          f"{gone['RssAnon']:.0f} MB, file {gone['RssFile']:.0f} MB, fds {again.fds_released}, deleted files still "
          f"mapped {again.deleted_released_mb:.0f} MB")
    live_rounds = args.rounds + args.continue_ - checkpoint_round
    print(f"continuation: {live_rounds} live rounds ({checkpoint_round + 1}..{args.rounds + args.continue_}) in "
          f"{again.continue_s:.1f} s, {again.continue_s / max(live_rounds, 1):.2f} s a round")
    rounds = again.rounds
    expected = list(range(args.rounds + args.continue_ + 1))
    print(f"run folder after the resumed run: {len(rounds)} round rows, rounds 0..{int(rounds['round'].max())} "
          f"{'each once' if list(rounds['round']) == expected else 'NOT each once in order'}; "
          f"{again.sessions:,} sessions")
    before = pd.DataFrame(first.tail)
    again_rows = rounds[rounds["round"].isin(before["round"])].reset_index(drop=True) if len(before) else rounds[:0]
    if not len(before):
        print("no rows were recorded between the checkpoint and the stop: nothing to compare")
        return
    differ = differing_columns(before.reset_index(drop=True), again_rows)
    span = f"rounds {int(before['round'].min())}..{int(before['round'].max())}"
    print(f"{span}, recorded before the stop and again after the resume: "
          + ("equal in every column" if not differ else f"DIFFER in {', '.join(differ)}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=200, help="rounds measured before the stop")
    parser.add_argument("--cohort", type=int, default=100, help="updates aggregated per round")
    parser.add_argument("--checkpoint-every", type=int, default=10, help="the scenario's run.checkpoint_every")
    parser.add_argument("--every", type=int, default=10, help="rounds between memory samples")
    parser.add_argument("--settle", type=int, default=50, help="growth is measured from this round to the end")
    parser.add_argument("--stop-after", type=int, default=3, help="rounds past --rounds the first run stops at")
    parser.add_argument("--continue", dest="continue_", type=int, default=10,
                        help="rounds past --rounds the resumed run goes to (more than --stop-after)")
    parser.add_argument("--dir", type=Path, help="where to create the run folder (default: a temporary one)")
    args = parser.parse_args()
    if not 0 < args.stop_after < args.continue_:
        parser.error("need 0 < --stop-after < --continue: the resumed run must go past the stop")
    if args.rounds < args.checkpoint_every or args.checkpoint_every < 1:
        parser.error("need a checkpoint before the stop: 1 <= --checkpoint-every <= --rounds")
    torch.set_num_threads(1)  # one update at a time, as the driver does: threads only contend on 2 cores
    scenario = build_scenario(args)
    wall_start = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        run_dir = Path(tmp) / "run"
        first = first_run(args, scenario, run_dir)
        again = resume(args, scenario, run_dir)
    print(f"fleet: {first.fleet:,} devices, {first.able:,} can train; {args.rounds} rounds of {args.cohort} "
          f"updates measured ({first.sessions:,} sessions recorded by the stop), checkpoint every "
          f"{args.checkpoint_every}; first run {first.wall_s:.0f} s, wall in all "
          f"{time.perf_counter() - wall_start:.0f} s")
    print(f"adapter: {first.layout_size:,} values; personal (LoRA B) {first.personal_values:,} as float16, "
          f"residual of the shared part {first.shared:,} as float32; both in files. Store bytes per device: "
          f"personal {first.bytes_per_device[0]:.0f}, residual {first.bytes_per_device[1]:.0f} (values alone "
          f"{2 * first.personal_values}, {4 * first.shared})")
    print_memory(args, first)
    print_checkpoints(first.checkpoints)
    print_resume(args, first, again)


if __name__ == "__main__":
    main()
