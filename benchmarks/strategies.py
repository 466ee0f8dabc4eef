"""Which strategy copes best? Three comparisons on the quickstart's data and model, each a set of full runs
with real training over several seeds, written to one report (strategies.html), a table of claims
(claims.csv) and printed.

  straggling     a fleet where most devices need minutes per session (timing of Qwen2.5-0.5B): synchronous
                 FedAvg with a 120 s deadline against FedBuff; simulated time to a target held-out loss.
  personalised   100 devices that each train several times: FedAvg over LoRA and bottleneck adapters
                 against PWFF (bottleneck shared, LoRA personal); uplink bytes and the loss on each device's
                 own held-out text.
  frequent       20 devices that each train about ten sessions: FedAvg over the whole adapter against PWFF and
                 FedSA-LoRA (A shared, B personal); the loss on each device's own held-out text.
  attacks        20% of devices send -4x their update: FedAvg without and with the attack, trimmed mean,
                 Krum; final held-out loss.

Every configuration runs over `--seeds` seeds (0, 1, ...). Each claim compares two configurations on one
figure: the mean over seeds of each, with its 95% confidence interval, and the 95% Welch interval of the
difference of the means (analysis/intervals.py); the claim holds beyond seed noise when that interval
excludes zero on the claimed side. A seed that never reached the target is left out of the time to target,
and the counts say how many reached it.

    python benchmarks/strategies.py [--out DIR] [--only straggling,attacks] [--seeds 3]
        (on 2 cores, 3 seeds: 41 minutes for straggling, personalised and attacks; 47 for frequent)
    python benchmarks/strategies.py --quick [--only straggling]
        (3 rounds of a 100-device fleet, only the configurations the claims name, in runs/strategies-quick:
        24 runs of about 17 s each on 2 cores, most of it starting the training worker; 7.5 minutes for all
        three, under 2 for straggling alone)
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis.compare import default_target, load_runs, run_row
from analysis.seeds import SeedGroup, seed_band_figures, seed_row, seed_table, shown_seed_table
from analysis.intervals import Difference, Interval, welch
from analysis.page import PALETTE, fmt, write_page
from fleet.pool import ray_session
from scenarios.loader import load_scenario
from scenarios.runner import RunOptions, run_scenario

SLOW_FLEET = ["model.emulate=qwen2.5-0.5b", "run.deadline_s=120"]
ATTACK = ["fleet.attack.fraction=0.2", "fleet.attack.kind=sign_flip", "fleet.attack.scale=4", "run.rounds=15"]
PERSONAL = ["fleet.size=100", "model.lora.bottleneck=16", "run.rounds=30"]
LIGHT = ["training.local_steps=4", "model.lora.dropout=0.1"]  # less local fitting per session
# Few owners, each training often: what a personal part can learn of its owner's names, places and habits
FREQUENT = ["fleet.size=20", "run.clients_per_round=5", "run.rounds=40",
            "model.lora.bottleneck=16"]
# --quick: appended to every run's overrides. Three short rounds of a small fleet, one worker (starting a
# worker costs more than such a run's training); the claims' figures are then those of early training.
QUICK = ["run.rounds=3", "fleet.size=100", "training.local_steps=2", "data.eval_windows=16", "runtime.workers=1"]


@dataclass(frozen=True)
class Claim:
    """`better` beats `than` on `metric` (a column of analysis.compare.run_row or analysis.seeds.seed_row; lower
    is better)."""

    says: str
    metric: str
    better: str
    than: str
    quick: bool = True  # checked by --quick too


@dataclass(frozen=True)
class Experiment:
    heading: str
    text: str
    target: float | None  # held-out loss that time to target is measured to; None: the highest final loss
    runs: dict[str, list[str]]  # configuration label -> scenario overrides
    claims: tuple[Claim, ...]


@dataclass(frozen=True)
class Verdict:
    claim: Claim
    difference: Difference  # better - than

    @property
    def outcome(self) -> str:
        d = self.difference
        if d.a.n < 2 or d.b.n < 2:
            short = self.claim.better if d.a.n < 2 else self.claim.than
            count = d.a if d.a.n < 2 else d.b
            return f"not testable: {short} measured it in {count.n} of {count.of} seeds"
        if d.high < 0:
            return "holds beyond the 95% interval"
        if d.low > 0:
            return "the opposite holds beyond the 95% interval"
        return "within seed noise: the 95% interval of the difference includes zero"


FEDBUFF, FEDAVG_SLOW = "fedbuff K=10, 30 at work", "fedavg, deadline 120 s"
FEDAVG_ATTACKED = "fedavg, attacked"
ROBUST = ("trimmed mean (beta 0.2), attacked", "krum (f=2), attacked", "multi-krum (f=2), attacked")
PAIRS = (("pwff", "fedavg, whole adapter", True),
         ("pwff, 4 steps, dropout 0.1", "fedavg, whole adapter, 4 steps, dropout 0.1", False))

EXPERIMENTS = {
    "straggling": Experiment(
        "Synchronous FedAvg with a deadline against FedBuff under heavy straggling",
        "Timing, memory and bytes of Qwen2.5-0.5B on the quickstart fleet: flagship phones train a session in "
        "about half a minute, low-end phones and gateways in many minutes. 15 rounds or versions of 10 updates.",
        3.0,
        {
            FEDAVG_SLOW: SLOW_FLEET + ["run.rounds=15"],
            FEDBUFF: SLOW_FLEET + ["strategy.name=fedbuff", "strategy.buffer_size=10", "strategy.concurrency=30",
                                   "run.rounds=15"],
        },
        (Claim("FedBuff reaches the target loss sooner than FedAvg under straggling", "time_to_target_s",
               FEDBUFF, FEDAVG_SLOW),),
    ),
    "personalised": Experiment(
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
        tuple(claim for better, than, quick in PAIRS for claim in (
            Claim(f"{better} has a lower loss on devices' own text than {than}", "final_personal_loss", better,
                  than, quick),
            Claim(f"{better} sends fewer uplink bytes than {than}", "uplink_bytes", better, than, quick))),
    ),
    "frequent": Experiment(
        "Personal parts when each device trains often",
        "20 devices (each its own owner's transcripts), 5 per round, 40 rounds: each device trains about ten "
        "sessions of 8 steps. FedAvg averages LoRA and the 16-wide bottleneck adapters; PWFF keeps LoRA on the "
        "device and shares the bottleneck adapters; FedSA-LoRA keeps LoRA's B on the device and shares A and "
        "the bottleneck adapters. Not run by --quick, whose 100-device fleet would undo the point.",
        None,
        {
            "fedavg, whole adapter, frequent": FREQUENT,
            "pwff, frequent": FREQUENT + ["strategy.name=pwff"],
            "fedsa-lora, frequent": FREQUENT + ["strategy.name=fedsa_lora"],
        },
        tuple(Claim(f"{rule.split(',')[0]} has a lower loss on devices' own text than FedAvg when devices train "
                    "often", "final_personal_loss", rule, "fedavg, whole adapter, frequent", quick=False)
              for rule in ("pwff, frequent", "fedsa-lora, frequent")),
    ),
    "attacks": Experiment(
        "Robust aggregation under 20% sign-flipping attackers",
        "20% of the fleet sends -4 times its update; 15 rounds of 10 updates.",
        None,
        {
            "fedavg, no attack": ["run.rounds=15"],
            FEDAVG_ATTACKED: ATTACK,
            ROBUST[0]: ATTACK + ["strategy.name=trimmed_mean"],
            ROBUST[1]: ATTACK + ["strategy.name=krum", "strategy.f=2", "run.min_reports=7"],
            ROBUST[2]: ATTACK + ["strategy.name=multikrum", "strategy.f=2", "run.min_reports=7"],
        },
        tuple(Claim(f"{rule.split(',')[0]} ends at a lower held-out loss than FedAvg under attack", "final_loss",
                    rule, FEDAVG_ATTACKED) for rule in ROBUST),
    ),
}


def run_folder(out: Path, key: str, label: str, seed: int) -> Path:
    return out / key / label.replace(" ", "_").replace(",", "").replace("%", "") / f"seed-{seed}"


def run_configuration(out: Path, overrides: list[str]) -> None:
    """One run, unless its folder already holds a finished one (so an interrupted benchmark goes on)."""
    if not (out / "summary.json").exists():
        scenario = load_scenario("quickstart", ["output.report=false"] + overrides)
        run_scenario(scenario, RunOptions(out=out, progress=False))


def verdicts(rows: pd.DataFrame, claims: tuple[Claim, ...]) -> list[Verdict]:
    """Each claim's Welch comparison over the seeds of its two configurations."""
    def values(label: str, metric: str) -> pd.Series:
        return rows.loc[rows["configuration"] == label, metric]

    return [Verdict(c, welch(values(c.better, c.metric), values(c.than, c.metric))) for c in claims]


def interval_text(iv: Interval) -> str:
    if iv.n == 0:
        return f"not measured (0 of {iv.of} seeds)"
    bounds = f" [{fmt(iv.low)}, {fmt(iv.high)}]" if iv.n >= 2 else ""
    return f"{fmt(iv.mean)}{bounds} ({iv.n} of {iv.of} seeds)"


def difference_text(d: Difference) -> str:
    return f"{fmt(d.diff)} [{fmt(d.low)}, {fmt(d.high)}]"


def claims_table(key: str, found: list[Verdict]) -> pd.DataFrame:
    """One row per claim, numbers as numbers (claims.csv): each side's seeds measured, mean and 95% interval,
    the difference better - than and its 95% Welch interval, and the outcome."""
    rows = []
    for v in found:
        d = v.difference
        sides = {f"{side}_{k}": getattr(iv, k) for side, iv in (("better", d.a), ("than", d.b))
                 for k in ("n", "mean", "low", "high")}
        rows.append({"comparison": key, "claim": v.claim.says, "figure": v.claim.metric, "better": v.claim.better,
                     "than": v.claim.than, **sides, "difference": d.diff, "difference_low": d.low,
                     "difference_high": d.high, "holds": bool(d.high < 0), "outcome": v.outcome})
    return pd.DataFrame(rows)


def shown_claims(found: list[Verdict]) -> pd.DataFrame:
    """The claims as the page shows them: each side and the difference as 'mean [95% interval]'."""
    return pd.DataFrame([{
        "claim": v.claim.says, "figure": v.claim.metric, "better": interval_text(v.difference.a),
        "than": interval_text(v.difference.b),
        "difference [95% Welch]": difference_text(v.difference),
        "outcome": v.outcome,
    } for v in found])


def experiment(key: str, exp: Experiment, args: argparse.Namespace) -> tuple[tuple, list[Verdict]]:
    """Run one comparison over the seeds; its page section and its claims."""
    claims = tuple(c for c in exp.claims if c.quick or not args.quick)
    needed = {label for c in claims for label in (c.better, c.than)}
    labels = [label for label in exp.runs if label in needed or not args.quick]
    dirs: dict[str, Path] = {}  # run name -> its folder
    configuration: dict[str, str] = {}  # run name -> its configuration's label
    for label in labels:
        for seed in range(args.seeds):
            started = time.time()
            out = run_folder(args.out, key, label, seed)
            run_configuration(out, exp.runs[label] + (QUICK if args.quick else []) + [f"seed={seed}"])
            name = f"{label} | seed {seed}"
            dirs[name], configuration[name] = out, label
            print(f"{key}: {label}, seed {seed} done in {time.time() - started:.0f} s", flush=True)
    runs = load_runs(dirs)
    # --quick: no fixed target, which a few rounds would not reach; the highest final loss, reached by every run
    target = exp.target if exp.target is not None and not args.quick else default_target(runs)
    rows = pd.DataFrame([{"configuration": configuration[name], **run_row(run, target), **seed_row(run, target)}
                         for name, run in zip(dirs, runs)])
    found = verdicts(rows, claims)
    table = seed_table(rows, ["configuration"])
    shown = shown_seed_table(table, ["configuration", "seeds"])
    print(f"\n## {exp.heading}  ({args.seeds} seeds; target held-out loss {fmt(target)})\n"
          f"{shown.to_string(index=False)}\n", flush=True)
    for v in found:
        print(f"- {v.claim.says} ({v.claim.metric}): {interval_text(v.difference.a)} against "
              f"{interval_text(v.difference.b)}; difference {difference_text(v.difference)}: {v.outcome}", flush=True)
    groups = [SeedGroup(label, PALETTE[i % len(PALETTE)], tuple(range(args.seeds)),
                        tuple(run.rounds for name, run in zip(dirs, runs) if configuration[name] == label))
              for i, label in enumerate(labels)]
    text = f"{exp.text} Each configuration over {args.seeds} seeds; target held-out loss {fmt(target)}."
    return (exp.heading, text, shown, seed_band_figures(groups, target)), found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="default: runs/strategies, or runs/strategies-quick with --quick")
    parser.add_argument("--only", default=",".join(EXPERIMENTS))
    parser.add_argument("--seeds", type=int, default=3, help="seeds per configuration, at least 2 (default 3)")
    parser.add_argument("--quick", action="store_true",
                        help="3 rounds of a 100-device fleet, only the configurations the claims name")
    args = parser.parse_args()
    if args.seeds < 2:
        parser.error("--seeds: an interval needs at least 2 seeds")
    args.out = args.out or Path("runs/strategies-quick" if args.quick else "runs/strategies")
    unknown = [key for key in args.only.split(",") if key not in EXPERIMENTS]
    if unknown:
        parser.error(f"--only: no comparison named {', '.join(unknown)}; there are {', '.join(EXPERIMENTS)}")
    keys = [key for key in args.only.split(",") if not args.quick or any(c.quick for c in EXPERIMENTS[key].claims)]
    if not keys:
        parser.error(f"--quick checks none of {args.only}")
    sections, claims = [], {}
    with ray_session(None, 2):
        for key in keys:
            section, claims[key] = experiment(key, EXPERIMENTS[key], args)
            sections.append(section)
    args.out.mkdir(parents=True, exist_ok=True)
    pd.concat([claims_table(key, found) for key, found in claims.items()], ignore_index=True).to_csv(
        args.out / "claims.csv", index=False)
    about = ("Each claim: the mean over seeds of both configurations with its 95% interval (and how many seeds "
             "measured it), and the difference better - than with its 95% Welch interval; the claim holds beyond "
             "seed noise when that interval lies below zero.")
    shown = pd.concat([shown_claims(found) for found in claims.values()], ignore_index=True)
    page = write_page(args.out / "strategies.html", "fedfleet: strategies compared",
                      [("Claims", about, shown, [])] + sections)
    print(f"claims: {args.out / 'claims.csv'}\nreport: {page}")


if __name__ == "__main__":
    main()
