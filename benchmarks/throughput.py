"""How fast does the emulator train clients, and how much of that is overhead?

For rounds of 100 clients (the quickstart's model and local work), prints:
  - client updates per second through the whole emulator (clock, Ray pool, adapter swaps, aggregation);
  - the training FLOP/s the pool achieves on the trained model, as a fraction of the dense matmul FLOP/s of the
    device it trains on, in the training dtype;
  - wall time per round divided by the compute floor: the same client steps in a bare PyTorch loop on all
    cores (or the GPU), in this process, with no Ray, no clock and no aggregation;
  - peak memory per worker (resident set; and CUDA memory on a GPU), and the bare loop's CUDA peak.
Everything is measured in the same run, so the ratios hold on a noisy shared machine.

    python benchmarks/throughput.py [--rounds 4] [--workers N] [--group 5|auto] [--clients 100]
        [--device cpu|cuda] [--dtype fp32|bf16] [--gpus-per-worker G] [--set FIELD=VALUE ...]
        [--shaped SmolLM2-135M]

`--device cuda` gives each worker `--gpus-per-worker` of a GPU (default: one GPU shared by the workers) and
trains the bare loop on the GPU; `--dtype bf16` sets runtime.train_dtype. `--set` overrides any scenario field
(`--set training.batch_size=16 --set model.path=DIR`). A quick check that it works:
`--clients 8 --rounds 3 --workers 1 --set training.local_steps=2`. `--shaped SmolLM2-135M` trains a model of
that architecture's shape and size, randomly initialised and built here (nothing is downloaded).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from fleet.base_model import load_base_model, load_tokenizer
from fleet.grouped import GroupedTrainer
from fleet.trainer import LocalTrainer, TrainJob, adapter_layout, get_flat, wrap_with_lora
from scenarios.assembly import group_size, lora_spec, train_settings
from scenarios.checks import trained_model
from scenarios.client_data import prepare_data
from scenarios.loader import load_scenario
from scenarios.runner import RunOptions, run_scenario
from shaped_model import write_shaped_model

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def sync(device: torch.device) -> None:
    """Wait for the device's queued work: CUDA runs asynchronously, so a clock read needs this first."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_flops(device: torch.device, dtype: str, threads: int, repeats: int = 10, trials: int = 5) -> float:
    """Dense matmul FLOP/s of the device in `dtype`: 1024^2 on a CPU, 8192^2 on a GPU (large enough to fill it).
    The best of `trials`: a peak, so that a moment of contention on a shared machine does not lower it."""
    torch.set_num_threads(threads)
    n = 8192 if device.type == "cuda" else 1024
    a, b = (torch.randn(n, n, device=device, dtype=DTYPES[dtype]) for _ in range(2))
    a @ b
    best = float("inf")
    for _ in range(trials):
        sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 * repeats / best


def emulator_round(scenario) -> tuple[float, dict]:
    """Wall seconds per round in steady state, from the times at which round rows are written, and the run's
    summary (its workers' peak memory)."""
    stamps: list[tuple[int, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        stamp = lambda row: stamps.append((row["round"], time.perf_counter()))  # noqa: E731
        run = run_scenario(scenario, RunOptions(out=Path(tmp) / "run", progress=False, on_round=stamp))
        summary = json.loads((run / "summary.json").read_text())
    # Round 0's loss and the last round's are measured by evaluation jobs; time only the rounds between.
    t = dict(stamps)
    first, last = 1, scenario.run.rounds - 1
    return (t[last] - t[first]) / (last - first), summary


def training_flops(scenario) -> float:
    """FLOPs of one client's local work on the model the host trains (4 N + attention per token); never the
    emulated architecture, whose FLOPs only the clock counts."""
    t = scenario.training
    arch = trained_model(scenario.model.path).arch
    return arch.training_flops_per_token(t.seq_len) * t.local_steps * t.batch_size * t.seq_len


def bare_loop(scenario, clients: int, threads: int, device: torch.device,
              group: int = 1) -> tuple[float, float | None]:
    """Seconds for the same client steps (same model, LoRA, dtype, batch shapes, data) with plain PyTorch on all
    cores or the GPU: one client at a time (`group` 1, LocalTrainer) or `group` clients per pass
    (GroupedTrainer); and on CUDA the most memory its tensors took (MiB)."""
    torch.set_num_threads(threads)
    t = scenario.training
    lora = lora_spec(scenario)
    model = wrap_with_lora(load_base_model(scenario.model.path), lora, scenario.seed)
    trainer = LocalTrainer(model, train_settings(scenario), adapter_layout(model, lora), device)
    data = prepare_data(scenario, load_tokenizer(scenario.model.path))
    start_adapter = get_flat(trainer.model)
    jobs = [TrainJob(k, k % len(data.client_ids), 1, 0, t.local_steps) for k in range(clients)]
    tokens = [data.train.get(job.data_client) for job in jobs]
    grouped = GroupedTrainer(trainer)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    start = time.perf_counter()
    for i in range(0, clients, group):
        if group == 1:
            trainer.train(jobs[i], start_adapter, tokens[i])
        else:
            grouped.train(jobs[i : i + group], [start_adapter] * len(jobs[i : i + group]), tokens[i : i + group])
    sync(device)
    seconds = time.perf_counter() - start
    return seconds, torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def worker_memory_line(summary: dict) -> str:
    line = f"RSS {summary['worker_peak_rss_mb']:.0f} MiB"
    if summary.get("worker_peak_cuda_mb") is not None:
        line += f", CUDA {summary['worker_peak_cuda_mb']:.0f} MiB"
    return line


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4, help="at least 3: rounds 1 to the last are timed")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--group", default="5", help="clients per pass of the grouped trainer, or auto (default 5: "
                        "100 clients make 20 groups, as many for each of 2 workers)")
    parser.add_argument("--clients", type=int, default=100, help="clients per round")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="runtime.train_dtype")
    parser.add_argument("--gpus-per-worker", type=float, default=None,
                        help="with --device cuda; default: 1 / workers, the workers sharing one GPU")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="a scenario override, as `fedfleet run --set` takes")
    parser.add_argument("--shaped", metavar="ARCHITECTURE",
                        help="train a model of this catalog architecture's shape (e.g. SmolLM2-135M), randomly "
                             "initialised and built here (shaped_model.py), instead of the built-in one")
    args = parser.parse_args()
    if args.rounds < 3:
        parser.error("--rounds must be at least 3")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device here")
    return args


def main() -> None:
    args = parse_args()
    shaped = tempfile.TemporaryDirectory()  # removed when the script ends
    if args.shaped:
        args.set.append(f"model.path={write_shaped_model(args.shaped, Path(shaped.name) / args.shaped)}")
    cores, device = os.cpu_count(), torch.device(args.device)
    gpus = 0.0 if args.device == "cpu" else args.gpus_per_worker or 1 / args.workers
    overrides = [
        f"run.rounds={args.rounds}", f"run.clients_per_round={args.clients}", "run.over_selection=1.0",
        "run.deadline_s=100000", f"run.eval_every={10**6}", f"runtime.workers={args.workers}",
        f"runtime.gpus_per_worker={gpus:g}", f"runtime.train_dtype={args.dtype}", "output.report=false",
        # Nobody drops out, so every round trains exactly `clients` clients.
        "fleet.classes=[{name: mec_t4, fraction: 1.0}]", *args.set,
    ]
    scenario = load_scenario("quickstart", overrides)
    grouped_scenario = load_scenario("quickstart", [*overrides, f"runtime.group_size={args.group}"])
    group = group_size(grouped_scenario)
    t = scenario.training
    flops_per_client = training_flops(scenario)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{cores} cores, {cores} threads"
    print(f"round: {args.clients} clients x {t.local_steps} steps x {t.batch_size}x{t.seq_len} tokens of "
          f"{scenario.model.path}, {flops_per_client / 1e9:.2f} GFLOP per client (4 N + attention per token), "
          f"{args.workers} workers, {gpus:g} GPU each, train_dtype {args.dtype}")
    # A shared machine's speed drifts over minutes: the peak is measured before each timed phase and at the end,
    # and the highest taken, so that a slow moment never raises the fractions below.
    peaks: list[float] = []

    def after_peak(phase):
        peaks.append(matmul_flops(device, args.dtype, cores))
        return phase()

    by_size = {1: scenario, group: grouped_scenario}  # one run when auto comes to 1
    runs = {g: after_peak(lambda s=s: emulator_round(s)) for g, s in by_size.items()}
    floors = {g: after_peak(lambda g=g: bare_loop(scenario, args.clients, cores, device, g)) for g in by_size}
    peaks.append(matmul_flops(device, args.dtype, cores))
    peak = max(peaks)
    print(f"device: {where}; dense {args.dtype} matmul {peak / 1e9:.1f} GFLOP/s (highest of {len(peaks)} "
          f"measurements in this run; lowest {min(peaks) / 1e9:.1f})")
    for g in by_size:
        (round_s, summary), (floor_s, floor_cuda) = runs[g], floors[g]
        print(f"runtime.group_size={g}{' (auto)' if g == group and args.group == 'auto' else ''}:")
        print(f"  client updates per second:           {args.clients / round_s:8.2f}")
        achieved = args.clients * flops_per_client / round_s
        print(f"  pool training FLOP/s:                {achieved / 1e9:8.2f} GFLOP/s = {achieved / peak:.3f} of matmul "
              "peak")
        print(f"  wall per round (emulator):           {round_s:8.2f} s")
        print(f"  compute floor (bare loop, {where}): {floor_s:8.2f} s")
        print(f"  ratio emulator / floor:              {round_s / floor_s:8.3f}")
        print(f"  peak memory per worker:              {worker_memory_line(summary)}")
        if floor_cuda is not None:
            print(f"  bare loop CUDA peak:                 {floor_cuda:.0f} MiB")
    print(f"grouped against one at a time: emulator {runs[1][0] / runs[group][0]:.2f}x, "
          f"bare loop {floors[1][0] / floors[group][0]:.2f}x")
    if args.dtype != "fp32":  # against the default engine too: float32, one client at a time
        default_s, _ = emulator_round(load_scenario("quickstart", [*overrides, "runtime.train_dtype=fp32"]))
        fp32_peak = matmul_flops(device, "fp32", cores)
        achieved = args.clients * flops_per_client / runs[group][0]
        print(f"fp32, one at a time: {args.clients / default_s:.2f} client updates per second; {args.dtype} in groups "
              f"of {group} against it: {default_s / runs[group][0]:.2f}x, at {achieved / fp32_peak:.3f} of the fp32 "
              f"matmul peak ({fp32_peak / 1e9:.1f} GFLOP/s)")


if __name__ == "__main__":
    main()
