"""Scenario validation: each bad input names its field and its reason, and leaves nothing behind."""

import re
from pathlib import Path

import pytest
import yaml

from aggregation.compression import Q8, TopK
from aggregation.partial import PWFF as PWFF_GROUPS
from fleet.selection import Oort
from scenarios.cli import main
from scenarios.errors import ScenarioError
from scenarios.loader import load_scenario, parse_scenario


def errors_of(tree: dict) -> str:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(tree)
    return str(info.value)


def test_builtin_quickstart_is_valid():
    scenario = load_scenario("quickstart")
    assert scenario.fleet.size >= 1000 and scenario.run.rounds >= 12
    assert scenario.data.source == "assistant" and scenario.model.emulate == "SmolLM2-135M"


def test_unknown_key_is_named():
    message = errors_of({"fleet": {"sise": 10}})
    assert "fleet.sise: unknown field" in message


def test_wrong_type_is_named():
    message = errors_of({"run": {"rounds": "many"}})
    assert "run.rounds:" in message and "integer" in message


def test_impossible_values_are_named():
    message = errors_of({"fleet": {"size": 0}, "network": {"uplink_mhz": -5}})
    assert "fleet.size:" in message and "network.uplink_mhz:" in message
    assert "2 invalid field(s)" in message


def test_cohort_larger_than_fleet():
    message = errors_of({"fleet": {"size": 10}, "run": {"clients_per_round": 10, "over_selection": 1.3}})
    assert "selects 13 devices, more than fleet.size (10)" in message


def test_unknown_device_class_and_strategy():
    assert "unknown device class 'toaster'" in errors_of({"fleet": {"classes": [{"name": "toaster", "fraction": 1}]}})
    assert "unknown strategy 'fedmagic'" in errors_of({"strategy": {"name": "fedmagic"}})
    assert "has no parameter momentum" in errors_of({"strategy": {"name": "fedavg", "momentum": 0.9}})


def test_sections_build_what_they_name():

    scenario = parse_scenario({"strategy": {"name": "fedbuff", "buffer_size": 3, "compression": {"name": "topk"}},
                               "run": {"selection": {"name": "oort", "alpha": 3}}})
    strategy = scenario.strategy.build()
    assert strategy.name == "fedbuff" and strategy.config.buffer_size == 3
    assert strategy is not scenario.strategy.build()  # a fresh one each time
    assert scenario.strategy.compression.build() == TopK(0.01)  # the section's default fraction
    assert parse_scenario({"strategy": {"compression": {"name": "q8"}}}).strategy.compression.build() == Q8()
    assert scenario.run.selection.build() == Oort(alpha=3.0)


def test_personal_and_frozen_replace_the_presets_groups():
    assert parse_scenario({"strategy": {"name": "pwff"}}).strategy.build().groups == PWFF_GROUPS
    groups = parse_scenario({"strategy": {"name": "pwff", "frozen": ["head"]}}).strategy.build().groups
    assert groups.personal == PWFF_GROUPS.personal and groups.frozen == ("head",)
    groups = parse_scenario({"strategy": {"name": "pwff", "personal": []}}).strategy.build().groups
    assert not groups.partial


def test_parameters_are_checked_by_their_config():
    message = errors_of({"strategy": {"compression": {"name": "topk", "fraction": 1.5}}})
    assert "strategy.compression: compression 'topk': fraction must be in (0, 1], got 1.5" in message
    assert "selection policy 'oort' has no parameter greed" in errors_of(
        {"run": {"selection": {"name": "oort", "greed": 3}}})
    assert "run.selection: selection 'oort': alpha: expected a number" in errors_of(
        {"run": {"selection": {"name": "oort", "alpha": "lots"}}})


def test_jsonl_needs_an_existing_file(tmp_path):
    assert "data.path is required" in errors_of({"data": {"source": "jsonl"}})
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"data": {"source": "jsonl", "path": str(tmp_path / "missing.jsonl")}}))
    with pytest.raises(ScenarioError, match="data.path: no such file"):
        load_scenario(path)


def test_override_is_validated_like_the_file():
    with pytest.raises(ScenarioError, match="fleet.size"):
        load_scenario("quickstart", ["fleet.size=-1"])
    assert load_scenario("quickstart", ["fleet.size=2000"]).fleet.size == 2000
    with pytest.raises(ScenarioError, match=r"override 'fleet.size=\[1': the value is not valid YAML"):
        load_scenario("quickstart", ["fleet.size=[1"])


def test_cli_exits_2_and_writes_no_run_folder(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("run:\n  rounds: 0\n")
    out = tmp_path / "run"
    assert main(["run", str(bad), "--out", str(out)]) == 2
    assert "run.rounds:" in capsys.readouterr().err
    assert not out.exists()


def test_cli_rejects_broken_yaml(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("fleet: [unclosed\n")
    assert main(["run", str(bad), "--out", str(tmp_path / "run")]) == 2
    assert "not valid YAML" in capsys.readouterr().err


@pytest.mark.parametrize("path", sorted(Path(__file__).parents[2].joinpath("scenarios").glob("*.yaml")), ids=str)
def test_every_builtin_scenario_is_valid(path):
    assert load_scenario(path).name == path.stem


def test_new_sections_are_checked():
    assert "unknown device class" in errors_of({"fleet": {"classes": [{"name": "fridge", "fraction": 1}]}})
    message = errors_of({"fleet": {"classes": [{"name": "low_end_phone", "fraction": 1,
                                                 "overrides": {"wings": 2}}]}})
    assert "overrides of low_end_phone" in message and "wings" in message
    message = errors_of({"fleet": {"classes": [{"name": "low_end_phone", "fraction": 1,
                                                 "overrides": {"availability": {"kind": "sometimes"}}}]}})
    assert "availability kind 'sometimes'" in message
    assert "unknown architecture 'gpt-9'" in errors_of({"model": {"emulate": "gpt-9"}})
    assert "network.path_loss" in errors_of({"network": {"path_loss": "moon"}})
    assert "run.selection" in errors_of({"run": {"selection": {"name": "oort", "greed": 3}}})


def test_norm_screen_is_on_by_default_and_null_turns_it_off():
    assert load_scenario("quickstart").run.reject_norm_factor == 10.0
    assert load_scenario("quickstart", ["run.reject_norm_factor=null"]).run.reject_norm_factor is None


def test_model_that_fits_no_device_is_reported_before_the_run(tmp_path, capsys):
    bad = tmp_path / "huge.yaml"
    bad.write_text(yaml.safe_dump({
        "model": {"emulate": "Llama-3.2-1B"},
        "training": {"batch_size": 64, "seq_len": 256},
        "fleet": {"size": 100, "classes": [{"name": "low_end_phone", "fraction": 1}]},
    }))
    out = tmp_path / "run"
    assert main(["run", str(bad), "--out", str(out)]) == 2
    assert "more than any device has" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["strategy.name=fedbuff", "strategy.buffer_size=0"],
         "strategy: strategy 'fedbuff': buffer_size: must be >= 1"),
        (["strategy.name=dp_fedavg", "strategy.delta=abc"], "delta: expected a number"),
        (["strategy.name=fedavg", "strategy.mu=0.1"], "strategy 'fedavg' has no parameter mu"),
        (["strategy.compression.name=zip"], "strategy.compression.name"),
        (["fleet.attack.kind=bribe"], "fleet.attack.kind"),
        (["model.lora.ranks={low_end_phone: 16}"], "ranks.low_end_phone: must be between 1 and r (8)"),
        (["run.reject_norm_factor=1"], "run.reject_norm_factor: Input should be greater than 1"),
        (["run.reject_norm_factor=often"], "run.reject_norm_factor:"),
    ],
)
def test_strategy_options_are_checked(overrides, message):
    with pytest.raises(ScenarioError, match=re.escape(message)):
        load_scenario("quickstart", overrides)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["strategy.name=pwff"], "leaves no parameter to aggregate (PWFF shares the bottleneck adapters"),
        (["strategy.name=krum", "strategy.f=2"], "run.min_reports: krum needs at least 7 updates"),
        (["strategy.name=secagg_fedavg", "strategy.compression.name=q8"], "strategy.compression: secure"),
    ],
)
def test_strategy_conflicts_are_reported_before_the_run(overrides, message, tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "output": {"dir": str(tmp_path / "runs")}}))
    assert main(["run", str(path), *sum([["--set", o] for o in overrides], [])]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
