"""How much memory does the driver itself need for a large fleet? The emulator runs a fleet of 100,000
devices for 100 synchronous rounds under FedSA-LoRA (each device keeps its LoRA B as a personal part) with
8-bit quantised uploads and error feedback (a residual per device), recording to a run folder as a real run
does, with the per-device state in files under it. Training is replaced by a host that returns seeded random
deltas of the real adapter's size at once, so only the driver's own state grows: the fleet table, personal
parts, residuals, records.

Prints, after rounds 10, 50 and 100: the resident memory (RSS), split into anonymous memory (the process's
own) and file pages (the state files mapped in, which the kernel may drop and read back), the peak RSS, each
against the baseline measured after the fleet and the emulator were built; the devices holding a personal
part and a residual, the bytes per device each store takes, and the state's bytes on disk. The default cohort
(100 updates a round, about 10,000 devices holding state after 100 rounds) keeps the run to a few minutes; a
cohort of 1,000 leaves state with about 63% of the fleet.

    python benchmarks/driver_memory.py [--devices 100000] [--rounds 100] [--cohort 100]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from analysis import checkpoint
from analysis.recorder import RunRecorder
from fleet.clients import ClientSide
from fleet.trainer import TrainResult
from scenarios.assembly import assemble
from scenarios.loader import load_scenario

REPORT_AT = (10, 50, 100)


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


def memory_mb() -> dict[str, float]:
    """VmRSS, RssAnon, RssFile and VmHWM (the peak RSS) now, in MB, from /proc (Linux)."""
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                fields[name] = int(value.split()[0]) / 2**10  # kB
    return fields


def disk_mb(directory: Path) -> float:
    """Bytes the files under `directory` take on disk: blocks are sparse until their rows are written."""
    return sum(p.stat().st_blocks * 512 for p in directory.rglob("*") if p.is_file()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--cohort", type=int, default=100, help="updates aggregated per round")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one update at a time, as the driver does: threads only contend on 2 cores
    scenario = load_scenario("quickstart", [
        "name=driver_memory", f"fleet.size={args.devices}", f"run.rounds={args.rounds}",
        f"run.clients_per_round={args.cohort}", "run.deadline_s=600", "run.eval_every=10", "network.cells=100",
        "strategy.name=fedsa_lora", "strategy.compression.name=q8", "output.report=false",
    ])
    start = memory_mb()
    run = assemble(scenario)  # the scenario's fleet, strategy, codec and ranks, as a run builds them
    run.server_model = None  # only the final save needs it
    fleet, ranks = run.fleet, run.ranks
    marks: dict[int, tuple] = {}
    wall_start = time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        state = run_dir / "state"  # where the runner puts it
        clients = run.client_side(state)

        def progress(row: dict) -> None:
            if row["round"] in REPORT_AT:
                marks[row["round"]] = (memory_mb(), len(clients.personal), clients.personal.nbytes,
                                       len(clients.codec.residual), clients.codec.residual.nbytes, disk_mb(state),
                                       time.perf_counter() - wall_start)

        recorder = RunRecorder(run_dir, {"name": scenario.name})
        emulator = run.emulator(clients, InstantHost(run.layout.size), recorder, on_progress=progress)
        base = memory_mb()
        emulator.run()
        recorder.close({})
        sessions = len(recorder.sessions_frame(["device"]))
        saved = checkpoint_figures(clients, run_dir, run.client_side)
    shared = int(clients.shared.sum())
    personal_values = int(clients.personal_mask.sum())
    print(f"fleet: {len(fleet):,} devices, {int((ranks > 0).sum()):,} can train; {args.rounds} rounds of "
          f"{args.cohort} updates; {sessions:,} sessions; wall {time.perf_counter() - wall_start:.0f} s")
    print(f"adapter: {run.layout.size:,} values; personal (LoRA B) {personal_values:,} as float16, "
          f"residual of the shared part {shared:,} as float32; both in files")
    print(f"RSS before building: {start['VmRSS']:.0f} MB; baseline after fleet and emulator: RSS "
          f"{base['VmRSS']:.0f} MB, anonymous {base['RssAnon']:.0f} MB, file {base['RssFile']:.0f} MB")
    print(f"{'round':>5} {'RSS MB':>7} {'anon MB':>8} {'file MB':>8} {'peak MB':>8} {'anon+':>6} {'peak+':>6} "
          f"{'personal':>9} {'B/device':>9} {'residual':>9} {'B/device':>9} {'disk MB':>8} {'wall s':>7}")
    for rnd, (mem, n_p, b_p, n_r, b_r, disk, wall) in sorted(marks.items()):
        print(f"{rnd:>5} {mem['VmRSS']:>7.0f} {mem['RssAnon']:>8.0f} {mem['RssFile']:>8.0f} {mem['VmHWM']:>8.0f} "
              f"{mem['RssAnon'] - base['RssAnon']:>6.0f} {mem['VmHWM'] - base['VmRSS']:>6.0f} "
              f"{n_p:>9,} {b_p / max(n_p, 1):>9.0f} {n_r:>9,} {b_r / max(n_r, 1):>9.0f} {disk:>8.0f} {wall:>7.0f}")
    print("anon+: anonymous memory over the baseline's; peak+: peak RSS over the baseline RSS")
    print(f"values alone: personal {2 * personal_values} B/device, residual {4 * shared} B/device")
    print("checkpoint of the per-device state: {:.2f} GB written in {:.1f} s; loaded into new stores in {:.1f} s, "
          "anonymous memory {:+.0f} MB while loading".format(*saved))


def checkpoint_figures(clients: ClientSide, run_dir: Path, fresh) -> tuple[float, float, float, float]:
    """What a checkpoint costs for this state: (GB, seconds to write, seconds to load into the stores of a new
    ClientSide, anonymous memory added by loading)."""
    path = run_dir / "checkpoint.safetensors"
    t0 = time.perf_counter()
    checkpoint.save(path, {"clients": clients.state_dict()})
    written = time.perf_counter() - t0
    resumed, before = fresh(run_dir / "state-resumed"), memory_mb()["RssAnon"]
    t0 = time.perf_counter()
    resumed.load_state_dict(checkpoint.load(path)["clients"])
    loaded = time.perf_counter() - t0
    return path.stat().st_size / 1e9, written, loaded, memory_mb()["RssAnon"] - before


if __name__ == "__main__":
    main()
