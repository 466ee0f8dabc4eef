"""Which strategy copes best? Three comparisons on the quickstart's data and model, each a set of full runs
with real training, written to one report (strategies.html) and printed as tables.

  straggling     a fleet where most devices need minutes per session (timing of Qwen2.5-0.5B): synchronous
                 FedAvg with a 120 s deadline against FedBuff; simulated time to a target held-out loss.
  personalised   100 devices that each train several times: FedAvg over LoRA and bottleneck adapters
                 against PWFF (bottleneck shared, LoRA personal); uplink bytes and the loss on each device's
                 own held-out text.
  attacks        20% of devices send -4x their update: FedAvg without and with the attack, trimmed mean,
                 Krum; final held-out loss.

    python benchmarks/strategies.py [--out DIR] [--only straggling,attacks]   (about 35 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from analysis.compare import comparison_figures, comparison_table, write_page
from fleet.pool import ray_session
from scenarios.loader import load_scenario
from scenarios.runner import RunOptions, run_scenario

SLOW_FLEET = ["model.emulate=qwen2.5-0.5b", "run.deadline_s=120"]
ATTACK = ["fleet.attack.fraction=0.2", "fleet.attack.kind=sign_flip", "fleet.attack.scale=4", "run.rounds=15"]
PERSONAL = ["fleet.size=100", "model.lora.bottleneck=16", "run.rounds=30"]
LIGHT = ["training.local_steps=4", "model.lora.dropout=0.1"]  # less local fitting per session

EXPERIMENTS = {
    "straggling": (
        "Synchronous FedAvg with a deadline against FedBuff under heavy straggling",
        "Timing, memory and bytes of Qwen2.5-0.5B on the quickstart fleet: flagship phones train a session in "
        "about half a minute, low-end phones and gateways in many minutes. Target: held-out loss 3.11.",
        3.11,
        {
            "fedavg, deadline 120 s": SLOW_FLEET + ["run.rounds=40"],
            "fedbuff K=10, 30 at work": SLOW_FLEET + ["strategy.name=fedbuff", "strategy.buffer_size=10",
                                                      "strategy.concurrency=30", "run.rounds=20"],
        },
    ),
    "personalised": (
        "PWFF partial aggregation against FedAvg over the whole adapter",
        "100 devices, 10 per round, 30 rounds; LoRA r=8 plus a 16-wide bottleneck adapter per block. FedAvg "
        "sends and averages both; PWFF sends only the bottleneck adapters and keeps LoRA on the device. Each "
        "device trains about three sessions; the second pair trains 4 local steps with LoRA dropout 0.1.",
        None,
        {
            "fedavg, whole adapter": PERSONAL,
            "pwff": PERSONAL + ["strategy.name=pwff"],
            "fedavg, whole adapter, 4 steps, dropout 0.1": PERSONAL + LIGHT,
            "pwff, 4 steps, dropout 0.1": PERSONAL + LIGHT + ["strategy.name=pwff"],
        },
    ),
    "attacks": (
        "Robust aggregation under 20% sign-flipping attackers",
        "20% of the fleet sends -4 times its update; 15 rounds of 10 updates.",
        None,
        {
            "fedavg, no attack": ["run.rounds=15"],
            "fedavg, attacked": ATTACK,
            "trimmed mean (beta 0.2), attacked": ATTACK + ["strategy.name=trimmed_mean"],
            "krum (f=2), attacked": ATTACK + ["strategy.name=krum", "strategy.f=2", "run.min_reports=7"],
            "multi-krum (f=2), attacked": ATTACK + ["strategy.name=multikrum", "strategy.f=2",
                                                    "run.min_reports=7"],
        },
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/strategies"))
    parser.add_argument("--only", default=",".join(EXPERIMENTS))
    args = parser.parse_args()
    sections = []
    with ray_session(None, 2):
        for key in args.only.split(","):
            heading, text, target, runs = EXPERIMENTS[key]
            dirs = {}
            for label, overrides in runs.items():
                out = args.out / key / label.replace(" ", "_").replace(",", "").replace("%", "")
                started = time.time()
                if not (out / "summary.json").exists():
                    scenario = load_scenario("quickstart", ["output.report=false"] + overrides)
                    run_scenario(scenario, RunOptions(out=out, progress=False))
                dirs[label] = out
                print(f"{key}: {label} done in {time.time() - started:.0f} s", flush=True)
            table = comparison_table(dirs, target)
            print(f"\n## {heading}\n{table.to_string(index=False)}\n", flush=True)
            sections.append((heading, text, table, comparison_figures(dirs, target)))
    print(f"report: {write_page(args.out / 'strategies.html', 'fedfleet: strategies compared', sections)}")


if __name__ == "__main__":
    main()
