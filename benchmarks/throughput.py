"""How fast does the emulator train clients, and how much of that is overhead?

For rounds of 100 clients (the quickstart's model and local work), prints:
  - client updates per second through the whole emulator (clock, Ray pool, adapter swaps, aggregation);
  - the training FLOP/s the pool achieves, as a fraction of this machine's dense fp32 matmul FLOP/s;
  - wall time per round divided by the compute floor: the same client steps in a bare PyTorch loop on all
    cores, in this process, with no Ray, no clock and no aggregation.
Everything is measured in the same run, so the ratios hold on a noisy shared machine.

    python benchmarks/throughput.py [--rounds 4] [--workers N] [--group 8]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from fleet.base_model import load_base_model, load_tokenizer
from fleet.grouped import GroupedTrainer
from fleet.trainer import LocalTrainer, TrainJob, adapter_layout, get_flat, wrap_with_lora
from scenarios.loader import load_scenario
from scenarios.assembly import lora_spec, train_settings
from scenarios.checks import target_architecture
from scenarios.client_data import prepare_data
from scenarios.runner import RunOptions, run_scenario

CLIENTS = 100


def matmul_flops(threads: int, n: int = 1024, repeats: int = 20) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def emulator_round_seconds(scenario) -> float:
    """Wall seconds per round in steady state, from the times at which round rows are written."""
    stamps: list[tuple[int, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        run_scenario(scenario, RunOptions(out=Path(tmp) / "run", progress=False,
                                          on_round=lambda row: stamps.append((row["round"], time.perf_counter()))))
    # Round 0's loss and the last round's are measured by evaluation jobs; time only the rounds between.
    t = dict(stamps)
    first, last = 1, scenario.run.rounds - 1
    return (t[last] - t[first]) / (last - first)


def training_flops(scenario) -> float:
    """FLOPs of one client's local work on the trained model (4 N + attention per token)."""
    t = scenario.training
    return target_architecture(scenario).training_flops_per_token(t.seq_len) * t.local_steps * t.batch_size * t.seq_len


def bare_loop_seconds(scenario, threads: int, group: int = 1) -> float:
    """The same client steps (same model, LoRA, batch shapes, data) with plain PyTorch on all cores: one
    client at a time (`group` 1, LocalTrainer) or `group` clients per pass (GroupedTrainer)."""
    torch.set_num_threads(threads)
    t = scenario.training
    lora = lora_spec(scenario)
    model = wrap_with_lora(load_base_model(scenario.model.path), lora, scenario.seed)
    trainer = LocalTrainer(model, train_settings(scenario), adapter_layout(model, lora))
    data = prepare_data(scenario, load_tokenizer(scenario.model.path))
    start_adapter = get_flat(model)
    jobs = [TrainJob(k, k % len(data.client_ids), 1, 0, t.local_steps) for k in range(CLIENTS)]
    tokens = [data.train.get(job.data_client) for job in jobs]
    grouped = GroupedTrainer(trainer)
    start = time.perf_counter()
    for i in range(0, CLIENTS, group):
        if group == 1:
            trainer.train(jobs[i], start_adapter, tokens[i])
        else:
            grouped.train(jobs[i : i + group], [start_adapter] * len(jobs[i : i + group]), tokens[i : i + group])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--group", type=int, default=4, help="clients per pass of the grouped trainer")
    args = parser.parse_args()
    cores = os.cpu_count()
    overrides = [
        f"run.rounds={args.rounds}", f"run.clients_per_round={CLIENTS}", "run.over_selection=1.0",
        "run.deadline_s=100000", f"run.eval_every={10**6}", f"runtime.workers={args.workers}",
        "output.report=false",
        # Nobody drops out, so every round trains exactly 100 clients.
        "fleet.classes=[{name: mec_t4, fraction: 1.0}]",
    ]
    scenario = load_scenario("quickstart", overrides)
    t = scenario.training
    flops_per_client = training_flops(scenario)
    peak = matmul_flops(cores)
    print(f"machine: {cores} cores, dense fp32 matmul {peak / 1e9:.1f} GFLOP/s (1024^3, {cores} threads)")
    print(f"round: {CLIENTS} clients x {t.local_steps} steps x {t.batch_size}x{t.seq_len} tokens, "
          f"{flops_per_client / 1e9:.2f} GFLOP per client (4 N + attention per token), {args.workers} workers")
    rounds = {group: emulator_round_seconds(load_scenario("quickstart", [*overrides, f"runtime.group_size={group}"]))
              for group in (1, args.group)}
    floors = {group: bare_loop_seconds(scenario, cores, group) for group in (1, args.group)}
    for group in (1, args.group):
        round_s, floor_s = rounds[group], floors[group]
        print(f"runtime.group_size={group}:")
        print(f"  client updates per second:           {CLIENTS / round_s:8.2f}")
        print(f"  pool training FLOP/s:                {CLIENTS * flops_per_client / round_s / 1e9:8.2f} GFLOP/s "
              f"= {CLIENTS * flops_per_client / round_s / peak:.3f} of matmul peak")
        print(f"  wall per round (emulator):           {round_s:8.2f} s")
        print(f"  compute floor (bare loop, {cores} threads): {floor_s:8.2f} s")
        print(f"  ratio emulator / floor:              {round_s / floor_s:8.3f}")
    print(f"grouped against one at a time: emulator {rounds[1] / rounds[args.group]:.2f}x, "
          f"bare loop {floors[1] / floors[args.group]:.2f}x")


if __name__ == "__main__":
    main()
