"""The `fedfleet` command.

    fedfleet run SCENARIO.yaml [--out DIR] [--seed N] [--workers N] [--address ADDR] [--set a.b=v ...] [--smoke]
    fedfleet run --resume RUN_DIR [--workers N] [--address ADDR]
    fedfleet compare RUN_DIR RUN_DIR... [--out PAGE.html] [--target LOSS]
    fedfleet sweep SCENARIO.yaml [--set a.b=v1,v2,... ...] [--seeds N] [--fix a.b=v ...] [--out DIR] [--address ADDR]
    fedfleet plan SCENARIO.yaml [--out DIR] [--set a.b=v ...] [--address ADDR]
    fedfleet build-base [--out DIR]

Exit status: 0 done; 2 bad input, the message naming the field and the reason (a cluster that cannot be
attached to included); 130 or 143 a run stopped by Ctrl-C or SIGTERM (it goes on with --resume, as the
message says); 1 anything else (a full disk included).
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path

from analysis.recorder import NotARunFolder
from fleet.cluster import ClusterUnavailable
from analysis.checkpoint import DamagedCheckpoint
from scenarios.errors import RunStopped, ScenarioError
from scenarios.loader import load_run_scenario, load_scenario
from scenarios.smoke import smoke_overrides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fedfleet", description="Emulate federated LoRA fine-tuning on an edge fleet.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a scenario and write its run folder")
    run.add_argument("scenario", nargs="?", help="a scenario YAML file, or the name of a built-in one (quickstart)")
    run.add_argument("--resume", type=Path, metavar="RUN_DIR",
                     help="go on with a stopped run from its last checkpoint, in its own folder; the results equal "
                     "those of a run that never stopped (only --workers, --address and --quiet may be given)")
    run.add_argument("--out", type=Path, help="run folder to create (default: output.dir/NAME-seedN-TIME)")
    run.add_argument("--seed", type=int, help="override the scenario's seed")
    run.add_argument("--workers", type=int, help="override runtime.workers (Ray actors that train)")
    run.add_argument("--address", help="attach to this Ray cluster ('auto' or host:port)")
    run.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                     help="override any scenario field, e.g. --set fleet.size=5000 (repeatable)")
    run.add_argument("--smoke", action="store_true",
                     help="a reduced run that finishes in seconds (at most about 200 devices with every class "
                     "kept, 2 rounds of a few clients, 4 cells, 2 local steps, 1 worker), applied after --set "
                     "and validated again: does the scenario run end to end?")
    run.add_argument("--quiet", action="store_true", help="no progress bar")

    compare = sub.add_parser("compare", help="overlay several run folders on one page; runs that differ only in "
                             "seed are also shown as a group: mean and 95%% interval")
    compare.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    compare.add_argument("--out", type=Path, default=Path("compare.html"), help="page to write (default: %(default)s)")
    compare.add_argument("--target", type=float, help="target held-out loss (default: the highest final loss)")

    sweep = sub.add_parser("sweep", help="run the cartesian product of scenario overrides in parallel on Ray")
    sweep.add_argument("scenario", help="a scenario YAML file, or the name of a built-in one")
    sweep.add_argument("--set", action="append", default=[], metavar="FIELD=V1,V2,...",
                       help="a field and the values to sweep (repeatable; the sweep is their product)")
    sweep.add_argument("--seeds", type=int, metavar="N",
                       help="run every setting over N seeds (the scenario's seed, +1, ..., +N-1) and report each "
                       "figure's mean over the seeds with its 95%% confidence interval")
    sweep.add_argument("--fix", action="append", default=[], metavar="FIELD=VALUE",
                       help="override a field in every trial (repeatable)")
    sweep.add_argument("--out", type=Path, help="sweep folder to create (default: output.dir/sweep-NAME-TIME)")
    sweep.add_argument("--address", help="attach to this Ray cluster ('auto' or host:port)")
    sweep.add_argument("--target", type=float, help="target held-out loss (default: the highest final loss)")
    sweep.add_argument("--quiet", action="store_true", help="no progress bar")

    plan = sub.add_parser("plan", help="capacity planning: systems-only probes of round time, bytes, energy")
    plan.add_argument("scenario", help="a scenario YAML file, or the name of a built-in one")
    plan.add_argument("--out", type=Path, help="plan folder to create (default: output.dir/plan-NAME-TIME)")
    plan.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                      help="override any scenario field (repeatable)")
    plan.add_argument("--address", help="run the probes and the horizon as Ray tasks on this cluster ('auto' or "
                      "host:port); the plan is the same as without it")
    plan.add_argument("--quiet", action="store_true", help="no progress bar")

    base = sub.add_parser("build-base", help="pretrain the built-in base model on the public plays")
    base.add_argument("--out", type=Path, help="model folder (default: the built-in one, replaced)")
    base.add_argument("--seed", type=int, default=0)

    args = parser.parse_args(argv)
    commands = {"run": run_command, "compare": compare_command, "sweep": sweep_command, "plan": plan_command,
                "build-base": build_base}
    try:
        return commands[args.command](args)
    except (ScenarioError, NotARunFolder, DamagedCheckpoint, ClusterUnavailable) as err:
        print(f"fedfleet: {err}", file=sys.stderr)
        return 2
    except RunStopped as err:
        print(f"fedfleet: {err}", file=sys.stderr)
        return err.exit_status
    except OSError as err:  # outside a run's own steps (a report, a sweep's table): nothing to resume
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print(f"fedfleet: the disk is full ({err.strerror}, writing {err.filename})", file=sys.stderr)
        return 1


def run_command(args: argparse.Namespace) -> int:
    runtime = [f"{field}={value}" for field, value in (("runtime.workers", args.workers),
                                                       ("runtime.address", args.address)) if value is not None]
    if args.resume is not None:
        given = [flag for flag, value in (("SCENARIO", args.scenario), ("--out", args.out), ("--seed", args.seed),
                                          ("--set", args.set), ("--smoke", args.smoke)) if value]
        if given:
            raise ScenarioError(f"--resume: the run folder holds the scenario; {', '.join(given)} cannot change it")
        scenario = load_run_scenario(args.resume, runtime)
    else:
        if args.scenario is None:
            raise ScenarioError("run: give a SCENARIO, or --resume RUN_DIR")
        overrides = list(args.set) + runtime + ([f"seed={args.seed}"] if args.seed is not None else [])
        scenario = load_scenario(args.scenario, overrides)
        if args.smoke:
            scenario = load_scenario(args.scenario, overrides + smoke_overrides(scenario))
    # Imported here so that a bad scenario is reported in a second, before torch and Ray load.
    from fleet.emulator import EmulationStalled
    from scenarios.runner import RunOptions, run_scenario

    try:
        run_dir = run_scenario(scenario, RunOptions(out=args.out, resume=args.resume, progress=not args.quiet,
                                                    stop_on_signals=True))
    except EmulationStalled as err:  # the scenario can run, but nothing it invites ever reports
        print(f"fedfleet: the run stopped: {err}", file=sys.stderr)
        return 1
    print(f"run folder: {run_dir}")
    print(f"report:     {run_dir / 'report.html'}")
    return 0


def compare_command(args: argparse.Namespace) -> int:
    from analysis.compare import write_comparison

    print(f"comparison: {write_comparison(args.runs, args.out, args.target)}")
    return 0


def sweep_command(args: argparse.Namespace) -> int:
    from scenarios.sweep import run_sweep

    sweep_dir = run_sweep(args.scenario, args.set, out=args.out, address=args.address, target=args.target,
                          progress=not args.quiet, fixed=args.fix, seeds=args.seeds)
    print(f"sweep folder: {sweep_dir}")
    print(f"report:       {sweep_dir / 'sweep.html'}")
    return 0


def plan_command(args: argparse.Namespace) -> int:
    scenario = load_scenario(args.scenario, args.set)
    from scenarios.plan import run_plan

    plan_dir = run_plan(scenario, out=args.out, progress=not args.quiet, address=args.address)
    print((plan_dir / "plan.txt").read_text(encoding="utf-8"), end="")
    print(f"plan folder: {plan_dir}")
    print(f"report:      {plan_dir / 'plan.html'}")
    return 0


def build_base(args: argparse.Namespace) -> int:
    from fleet.base_model import BUILTIN_DIR, pretrain
    from fleet.data import DEFAULT_PUBLIC_PLAYS, public_text

    pretrain(args.out or BUILTIN_DIR, public_text(DEFAULT_PUBLIC_PLAYS), seed=args.seed)
    return 0


def entry() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())


if __name__ == "__main__":
    entry()
