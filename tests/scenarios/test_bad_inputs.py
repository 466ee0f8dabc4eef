"""Scenarios got wrong the way users get them wrong: each is refused by `fedfleet run` with exit status 2, a
message naming the field (or the file) and no run folder left behind."""

import json
import shutil
from pathlib import Path

import pytest

from fleet.model_files import BUILTIN_DIR
from scenarios.cli import main

PHONES = "fleet.classes=[{name: flagship_phone, fraction: 1.0, overrides: {%s}}]"

# (case, --set overrides, a text the message must hold)
CASES = [
    ("no devices", ["fleet.size=0"], "fleet.size"),
    ("negative fleet", ["fleet.size=-5"], "fleet.size"),
    ("no classes", ["fleet.classes=[]"], "fleet.classes"),
    ("unknown class", ["fleet.classes=[{name: toaster, fraction: 1}]"], "fleet.classes.0.name"),
    ("no compute", [PHONES % "peak_tflops: [0, 0]"], "peak_tflops"),
    ("negative compute power", [PHONES % "compute_power_w: -3"], "compute_power_w"),
    ("swapped battery range", [PHONES % "battery_wh: [20, 10]"], "battery_wh"),
    ("negative battery", [PHONES % "battery_wh: [-5, 10]"], "battery_wh"),
    ("utilisation as a percentage", [PHONES % "utilisation: 15"], "utilisation"),
    ("negative failure rate", [PHONES % "failures_per_hour: -1"], "failures_per_hour"),
    ("transmit power in mW", [PHONES % "tx_power_dbm: 200"], "tx_power_dbm"),
    ("unknown override", [PHONES % "wings: 2"], "fleet.classes.0"),
    ("invited below the cutoff", ["fleet.min_charge=0.05", "fleet.cutoff_charge=0.1"], "min_charge"),
    ("swapped charge range", ["fleet.initial_charge=[0.9, 0.2]"], "fleet.initial_charge"),
    ("a misspelt field", ["fleet.sise=5"], "fleet.sise: unknown field"),
    ("no cells", ["network.cells=0"], "network.cells"),
    ("no uplink band", ["network.uplink_mhz=0"], "network.uplink_mhz"),
    ("carrier in MHz", ["network.carrier_ghz=3500"], "network.carrier_ghz"),
    ("noise figure in linear units", ["network.noise_figure_db=3257"], "network.noise_figure_db"),
    ("base station power in mW", ["network.bs_power_dbm=40000"], "network.bs_power_dbm"),
    ("unknown path loss model", ["network.path_loss=urban"], "network.path_loss"),
    ("interference above one", ["network.interference_load=1.5"], "network.interference_load"),
    ("rank zero", ["model.lora.r=0"], "model.lora.r"),
    ("a module the model lacks", ["model.lora.target_modules=[qproj]"], "model.lora.target_modules"),
    ("no such model folder", ["model.path=/nonexistent/model"], "model.path"),
    ("unknown emulated model", ["model.emulate=gpt-9"], "model.emulate"),
    ("no local steps", ["training.local_steps=0"], "training.local_steps"),
    ("negative learning rate", ["training.lr=-0.001"], "training.lr"),
    ("unknown strategy", ["strategy.name=fedmagic"], "unknown strategy 'fedmagic'"),
    ("a parameter the strategy lacks", ["strategy.name=fedbuff", "strategy.momentum=0.9"], "momentum"),
    ("server rate zero", ["strategy.name=fedadam", "strategy.server_lr=0"], "server_lr"),
    ("unknown codec", ["strategy.compression.name=zip"], "strategy.compression.name"),
    ("no clients per round", ["run.clients_per_round=0"], "run.clients_per_round"),
    ("more invited than devices", ["run.clients_per_round=5000"], "fleet.size"),
    ("deadline in hours", ["run.deadline_s=0.01"], "run.deadline_s"),
    ("more reports than clients", ["run.min_reports=20"], "min_reports"),
    ("jsonl without a path", ["data.source=jsonl"], "data.path"),
    ("missing jsonl file", ["data.source=jsonl", "data.path=/nonexistent/clients.jsonl"], "data.path"),
    ("no workers", ["runtime.workers=0"], "runtime.workers"),
]


def refuse(tmp_path: Path, args: list[str], capsys) -> str:
    out = tmp_path / "run"
    assert main(["run", *args, "--out", str(out), "--quiet"]) == 2
    assert not out.exists()
    return capsys.readouterr().err


@pytest.mark.parametrize("overrides,field", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_bad_field_is_named(tmp_path, capsys, overrides, field):
    message = refuse(tmp_path, ["quickstart", *[arg for o in overrides for arg in ("--set", o)]], capsys)
    assert field in message


@pytest.mark.parametrize("text", ["", "  \n\n", "# all defaults, I hope\n"], ids=["empty", "blank", "comments"])
def test_an_empty_scenario_file_is_refused(tmp_path, capsys, text):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    assert "holds no scenario" in refuse(tmp_path, [str(path)], capsys)


def test_data_where_no_client_has_enough_text(tmp_path, capsys):
    data = tmp_path / "clients.jsonl"
    data.write_text("\n".join(json.dumps({"client_id": f"c{i}", "text": "one line"}) for i in range(5)) + "\n")
    message = refuse(tmp_path, ["quickstart", "--set", "data.source=jsonl", "--set", f"data.path={data}"], capsys)
    assert "data.min_lines" in message


def test_a_model_folder_without_a_tokenizer(tmp_path, capsys):
    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(BUILTIN_DIR / name, folder / name)
    assert "tokenizer" in refuse(tmp_path, ["quickstart", "--set", f"model.path={folder}"], capsys)
