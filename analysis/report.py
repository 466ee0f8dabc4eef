"""report.html: what one run shows a person. It opens with the few numbers a reader came for (the loss gained;
time, uplink and energy to the target loss; completion; what LoRA saved; which model was trained and which
emulated) and the headline figure, the loss against simulated time; the long summary table and the run's other
figures follow. Self-contained (plotly.js inlined once), opens offline."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from analysis import figures as fg
from analysis.detection import detection_section
from analysis.metrics import losses, participation, run_target, to_target, with_cumulative
from analysis.page import fmt, in_units, write_page
from analysis.recorder import load_run

NOT_MEASURED = "not measured"


def summary_rows(rounds: pd.DataFrame, clients: pd.DataFrame, summary: dict) -> list[tuple[str, str]]:
    """The report's table: (what, value) rows; rows whose value the run did not record are left out."""
    measured = not losses(rounds).empty
    target, how = run_target(rounds, summary)
    reached = to_target(rounds, target)
    took_part = participation(clients)
    fleet = summary.get("fleet_size")

    def loss(v) -> str:
        return fmt(v) if v is not None and not math.isnan(v) else NOT_MEASURED

    def until_target(key: str, show=fmt) -> str:
        if not measured:
            return NOT_MEASURED
        if target is None:
            return "no target"
        return "not reached" if math.isnan(reached[key]) else show(reached[key])

    def devices(n: int) -> str:
        return f"{n:,} ({n / fleet:.1%} of the fleet)" if fleet else f"{n:,}"

    def share(v) -> str | None:
        return f"{v:.1%}" if v is not None and not math.isnan(v) else None

    full_up, up = summary.get("full_model_uplink_bytes"), summary.get("bytes_up")
    rows = [
        ("scenario", summary.get("scenario")),
        ("strategy", summary.get("strategy")),
        ("rounds run", summary.get("rounds")),
        ("simulated time (s)", summary.get("simulated_time_s")),
        ("held-out loss of the base model", loss(summary.get("base_eval_loss"))),
        ("held-out loss at the end", loss(summary.get("final_eval_loss"))),
        ("loss on devices' own text, with their personal part, at the end",
         loss(summary.get("final_personal_loss"))),
        ("target loss", fmt(target) if target is not None else how),
        ("how the target was chosen", how if target is not None else None),
        ("simulated time to target (s)", until_target("time_to_target_s")),
        ("uplink bytes to target", until_target("uplink_bytes_to_target", size)),
        ("downlink bytes to target", until_target("downlink_bytes_to_target", size)),
        ("fleet energy to target (J)", until_target("energy_to_target_j")),
        ("mean round duration (s)", summary.get("mean_round_s")),
        ("share of invited sessions that reported", share(took_part["completion_rate"])),
        ("sessions invited", summary.get("sessions")),
        ("devices invited at least once", devices(took_part["devices_invited"])),
        ("devices that reported at least once", devices(took_part["devices_reported"])),
        ("uplink bytes", size(up)),
        ("downlink bytes", size(summary.get("bytes_down"))),
        ("fleet energy (J)", summary.get("energy_j")),
        ("uplink bytes of full-model fine-tuning, same sessions (float32 weights)", size(full_up)),
        ("uplink as a share of full-model fine-tuning", share(summary.get("uplink_fraction_of_full"))),
        ("uplink bytes saved against full-model fine-tuning",
         size(full_up - up) if full_up is not None and up is not None else None),
        ("trained model (host)", summary.get("trained_model")),
        ("emulated model (timing, memory, bytes)", summary.get("emulated_model")),
        ("adapter parameters (emulated model)", summary.get("adapter_params")),
        ("peak training memory per device (GB)", summary.get("training_memory_gb")),
        ("devices with enough memory", summary.get("eligible_devices")),
        ("devices that can be invited (memory, ever available)", summary.get("invitable_devices")),
        ("privacy accounting: population sampled from", summary.get("dp_population")),
        ("privacy accounting: sampling rate (cohort / population)", summary.get("dp_sampling_rate")),
        ("privacy accounting: sampling assumed", summary.get("dp_sampling")),
        ("fleet size", fleet),
        ("wall time of the emulation (s)", summary.get("wall_s")),
    ]
    return [(label, fmt(v)) for label, v in rows if v is not None]


def glance_rows(rounds: pd.DataFrame, clients: pd.DataFrame, summary: dict) -> list[tuple[str, str]]:
    """The report's first table: one line each for what a reader came for."""
    target, _ = run_target(rounds, summary)
    reached = to_target(rounds, target)
    base, final = summary.get("base_eval_loss"), summary.get("final_eval_loss")
    completion = participation(clients)["completion_rate"]
    share = summary.get("uplink_fraction_of_full")
    run_s = summary.get("simulated_time_s")

    def to_reach(key: str, show) -> str:
        if target is None:
            return NOT_MEASURED
        return "not reached" if math.isnan(reached[key]) else show(reached[key])

    return [
        ("held-out loss, base model to the end",
         f"{fmt(base)} to {fmt(final)} ({(final - base) / base:+.1%})" if base and final is not None else NOT_MEASURED),
        (f"simulated time to target loss {fmt(target)}" if target is not None else "simulated time to target loss",
         to_reach("time_to_target_s", lambda v: f"{fmt(v)} s" + (f" of {fmt(run_s)} s run" if run_s else ""))),
        ("uplink bytes to target", to_reach("uplink_bytes_to_target", size)),
        ("fleet energy to target", to_reach("energy_to_target_j", lambda v: f"{fmt(v)} J")),
        ("invited sessions that reported", f"{completion:.1%}" if not math.isnan(completion) else NOT_MEASURED),
        ("LoRA uplink against full-model fine-tuning",
         f"{share:.1%} of its bytes ({1 - share:.1%} saved)" if share is not None else NOT_MEASURED),
        ("trained on the host (learning curves)", summary.get("trained_model") or NOT_MEASURED),
        ("emulated on the devices (timing, memory, bytes, energy)", summary.get("emulated_model") or NOT_MEASURED),
    ]


def size(n) -> str | None:
    """Bytes exactly, and in the largest unit that fits: '13,168,924 (13.2 MB)'."""
    if n is None:
        return None
    return f"{n:,.0f} ({in_units(n)})" if abs(n) >= 1e3 else f"{n:,.0f}"


def learning_figures(rounds: pd.DataFrame, target: float | None) -> list[go.Figure]:
    if losses(rounds).empty:
        return []
    return [fg.loss_figure(rounds, x, title, x_title, target) for x, title, x_title in fg.LOSS_VIEWS]


def write_report(run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    rounds, clients, summary = load_run(run_dir)
    rounds = with_cumulative(rounds)
    target, _ = run_target(rounds, summary)
    sessions = not clients.empty
    glance = pd.DataFrame(glance_rows(rounds, clients, summary), columns=["", "this run"])
    table = pd.DataFrame(summary_rows(rounds, clients, summary), columns=["", "this run"])
    headline, *other_views = learning_figures(rounds, target) or [None]
    sections = [
        ("At a glance", "The target loss is the dotted line in the figure.", glance, [headline]),
        ("Summary", "", table, []),
        ("Learning", "Held-out loss of the global adapter at each evaluated server version against what it cost; "
                     "the dotted line is the target loss.", None, other_views),
        detection_section(run_dir, rounds),
        ("Participation", "Who took part, when, and how their sessions ended.", None,
         [fg.timeline_figure(clients), fg.outcome_figure(clients), fg.drop_figure(clients),
          fg.class_figure(clients), fg.duration_figure(clients)] if sessions else []),
        ("Rounds", "", None, [fg.round_figure(rounds)] + ([fg.staleness_figure(clients)] if sessions else [])),
        ("Battery", "", None, [fg.battery_figure(rounds, clients)]),
        ("Cells", "", None, [fg.cell_figure(clients)] if sessions else []),
    ]
    sections = [(h, text, t, [f for f in figs if f is not None]) for h, text, t, figs in sections]
    intro = (f"Times are simulated seconds; wall time is the host's. Losses come from the trained model "
             f"({summary.get('trained_model', '?')}); timing, memory, bytes and energy from the emulated model "
             f"({summary.get('emulated_model', '?')}).")
    title = f"fedfleet run: {summary.get('scenario', run_dir.name)}"
    return write_page(run_dir / "report.html", title, sections, intro)
