"""Pre-run checks: a scenario that can never run is refused before any work, naming the field and the reason."""

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from scenarios.checks import check_scenario
from scenarios.cli import main
from scenarios.errors import ScenarioError
from scenarios.loader import load_scenario, parse_scenario


def refused(tmp_path, capsys, tree: dict) -> str:
    """Run `fedfleet run` on the scenario; assert exit 2 and no run folder; the error text."""
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "s", **tree}))
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 2
    assert not out.exists()
    return capsys.readouterr().err


def check_message(tree: dict) -> str:
    with pytest.raises(ScenarioError) as info:
        check_scenario(parse_scenario({"name": "s", **tree}))
    return str(info.value)


# --- files ---------------------------------------------------------------------------------------------------


def test_missing_and_folder_data_files(tmp_path, capsys):
    err = refused(tmp_path, capsys, {"data": {"source": "jsonl", "path": str(tmp_path / "nope.jsonl")}})
    assert f"data.path: no such file: {tmp_path / 'nope.jsonl'}" in err
    (tmp_path / "folder.jsonl").mkdir()
    err = refused(tmp_path, capsys, {"data": {"source": "jsonl", "path": str(tmp_path / "folder.jsonl")}})
    assert f"data.path: {tmp_path / 'folder.jsonl'} is not a file" in err


def test_missing_link_trace(tmp_path, capsys):
    err = refused(tmp_path, capsys, {"network": {"uplink_trace": {"path": str(tmp_path / "up.txt"),
                                                                  "format": "two_column"}}})
    assert "network.uplink_trace" in err and "no such file" in err


def test_missing_availability_trace(tmp_path, capsys):
    classes = [{"name": "low_end_phone", "fraction": 1,
                "overrides": {"availability": {"kind": "trace", "path": str(tmp_path / "behave.json")}}}]
    err = refused(tmp_path, capsys, {"fleet": {"size": 50, "classes": classes}})
    assert "fleet.classes.0" in err and "behave.json" in err and "cannot read" in err


def test_model_folder_without_config(tmp_path, capsys):
    (tmp_path / "model").mkdir()
    err = refused(tmp_path, capsys, {"model": {"path": str(tmp_path / "model")}})
    assert "model.path:" in err and "no config.json" in err


class Tripwire:
    """Unpickling this touches a file: proof that a pickle was loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def pickled_model_folder(tmp_path) -> tuple[Path, Path]:
    """A model folder whose only weights are a pickle that would touch `marker` when loaded."""
    folder, marker = tmp_path / "pickled", tmp_path / "unpickled"
    folder.mkdir()
    builtin = Path(__file__).parents[2] / "fleet" / "base_model"
    (folder / "config.json").write_text((builtin / "config.json").read_text())
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(Tripwire(marker)))
    return folder, marker


def test_pickled_model_weights_are_refused_unread(tmp_path, capsys):
    folder, marker = pickled_model_folder(tmp_path)
    err = refused(tmp_path, capsys, {"model": {"path": str(folder)}})
    assert "model.path:" in err and "only pickled weights (pytorch_model.bin)" in err
    assert not marker.exists()


def test_base_model_loader_never_unpickles(tmp_path):
    from fleet.base_model import load_base_model

    folder, marker = pickled_model_folder(tmp_path)
    with pytest.raises(OSError, match="safetensors"):
        load_base_model(str(folder))
    assert not marker.exists()


# --- the fleet against the model, the cohort and the deadline ------------------------------------------------


def test_model_that_fits_no_device_class():
    message = check_message({"model": {"emulate": "Llama-3.2-1B"}, "training": {"batch_size": 64, "seq_len": 256},
                             "fleet": {"size": 100, "classes": [{"name": "low_end_phone", "fraction": 1}]}})
    assert "model: LoRA training of Llama-3.2-1B needs" in message and "largest: 4.0 GB" in message


LLAMA_ON_PHONES = {
    # Llama-3.2-1B in bf16 needs 5.5 GB to train at batch 16 x 64: low-end phones (3 to 4 GB) cannot hold it,
    # flagships (8 to 16 GB) can
    "model": {"emulate": "Llama-3.2-1B"},
    "fleet": {"size": 100, "classes": [{"name": "low_end_phone", "fraction": 0.9},
                                       {"name": "flagship_phone", "fraction": 0.1}]},
    "run": {"deadline_s": 600},  # a flagship's local work takes over a minute
}


def test_cohort_larger_than_the_devices_that_can_train(tmp_path, capsys):
    err = refused(tmp_path, capsys, {**LLAMA_ON_PHONES, "run": {"clients_per_round": 8, "deadline_s": 600}})
    assert "run.clients_per_round: a round invites 11 devices" in err and "more than the 10 devices" in err
    # 7 x 1.3 -> 10 invitations: exactly the flagships
    check_scenario(parse_scenario({**LLAMA_ON_PHONES, "run": {"clients_per_round": 7, "deadline_s": 600}}))
    # with memory ignored, every phone counts
    check_scenario(parse_scenario({**LLAMA_ON_PHONES, "run": {"clients_per_round": 8, "deadline_s": 600},
                                   "model": {"emulate": "Llama-3.2-1B", "memory_policy": "ignore"}}))


def test_deadline_shorter_than_any_session(tmp_path, capsys):
    # quickstart's fastest device (a flagship, at most 4 TFLOP/s x 0.15) needs about 0.06 s for 8 local steps
    err = refused(tmp_path, capsys, {"run": {"deadline_s": 0.01}})
    assert "run.deadline_s: 0.01 s is shorter than any session can be: at least" in err
    # the same deadline stands where it bounds no session
    check_scenario(parse_scenario({"run": {"deadline_s": 0.01, "policy": "k_fastest"}}))
    check_scenario(parse_scenario({"run": {"deadline_s": 0.01}, "strategy": {"name": "fedbuff"}}))


def test_deadline_bound_counts_compute_and_links():
    # Llama-3.2-1B on T4 servers (65 TFLOP/s x 0.3): the bound is the compute of 8 steps of 16 x 64 tokens,
    # plus well under a second for 2 x 22.5 MB over 20 MHz links at their best
    from fleet.architectures import get_architecture

    compute_s = get_architecture("Llama-3.2-1B").training_flops_per_token(64) * 8 * 16 * 64 / (65e12 * 0.3)
    tree = {"model": {"emulate": "Llama-3.2-1B"}, "fleet": {"size": 50, "classes": [{"name": "mec_t4", "fraction": 1}]}}
    check_scenario(parse_scenario({**tree, "run": {"deadline_s": compute_s + 1}}))
    assert "run.deadline_s" in check_message({**tree, "run": {"deadline_s": compute_s}})  # links take time too
    # The servers stand at their sites and use the backhaul, not the radio: a 10 kHz uplink changes nothing,
    # while a 10 Mb/s backhaul takes 2 x 22.5 MB x 8 / 10 Mb/s = 36 s.
    check_scenario(parse_scenario({**tree, "run": {"deadline_s": compute_s + 1}, "network": {"uplink_mhz": 0.01}}))
    assert "run.deadline_s" in check_message({**tree, "run": {"deadline_s": compute_s + 30},
                                              "network": {"backhaul_mbps": 10}})
    # Jetsons use the radio: a 10 kHz uplink carries at most a few hundred kb/s, the upload alone takes minutes
    jetsons = {**tree, "fleet": {"size": 50, "classes": [{"name": "jetson_orin_nano", "fraction": 1}]}}
    assert "run.deadline_s" in check_message({**jetsons, "run": {"deadline_s": 120}, "network": {"uplink_mhz": 0.01}})
    check_scenario(parse_scenario({**jetsons, "run": {"deadline_s": 120}}))


def test_slow_trace_makes_the_deadline_impossible(tmp_path):
    trace = tmp_path / "slow.txt"
    trace.write_text("0 0.001\n10 0.001\n")  # 1 kb/s
    tree = {"network": {"uplink_trace": {"path": str(trace), "format": "two_column"}}, "run": {"deadline_s": 600}}
    message = check_message(tree)
    assert "run.deadline_s: 600 s is shorter than any session can be" in message


def test_problems_are_reported_together():
    message = check_message({**LLAMA_ON_PHONES, "run": {"clients_per_round": 8, "deadline_s": 0.001}})
    assert "2 problem(s)" in message and "run.clients_per_round" in message and "run.deadline_s" in message


def test_every_builtin_scenario_passes_the_checks():
    for path in sorted((Path(__file__).parents[2] / "scenarios").glob("*.yaml")):
        load_scenario(path)  # runs check_scenario


def test_command_exits_2_before_loading_the_heavy_parts(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "run": {"deadline_s": 0.01}}))
    code = ("import sys; from scenarios.cli import main; status = main(sys.argv[1:]); "
            "assert 'ray' not in sys.modules and 'transformers' not in sys.modules; sys.exit(status)")
    done = subprocess.run([sys.executable, "-c", code, "run", str(path), "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": ""})
    assert done.returncode == 2, done.stderr
    assert "run.deadline_s" in done.stderr and not (tmp_path / "run").exists()


def test_a_link_that_carries_nothing(tmp_path):
    # a silent uplink trace carries no bit at all: once a division by zero
    silent = tmp_path / "silent.txt"
    silent.write_text("0 0\n1 0\n")
    message = check_message({"network": {"uplink_trace": {"path": str(silent), "format": "two_column"}}})
    assert "run.deadline_s: no session can ever finish" in message


def test_asynchronous_strategies_refuse_a_broadcast_per_cohort():
    message = check_message({"strategy": {"name": "fedbuff"}, "network": {"multicast_download": True}})
    assert "network.multicast_download:" in message and "fedbuff" in message
    check_scenario(parse_scenario({"name": "s", "network": {"multicast_download": True}}))  # synchronous: fine
