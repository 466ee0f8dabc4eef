"""The strategy table of docs/strategies.md lists every registered strategy with its parameters and their defaults, and every
registered parameter says what it means."""

import re
from pathlib import Path

import pytest
import yaml

from aggregation import strategy_names
from aggregation.compression import CODECS
from aggregation.registry import STRATEGIES, strategy_config, strategy_parameters
from fleet.availability import AVAILABILITY
from fleet.selection import SELECTORS

TABLE = Path(__file__).parents[2] / "docs" / "strategies.md"


def documented() -> dict[str, str]:
    rows = re.findall(r"^\| `(\w+)` \| ([^|]*) \|", TABLE.read_text(), flags=re.M)
    return {name: params for name, params in rows}


def test_every_strategy_is_in_the_table_with_its_defaults():
    table = documented()
    assert set(strategy_names()) <= set(table)
    for name in strategy_names():
        params = table[name].strip()
        written = {} if params == "none" else yaml.safe_load("{" + params.replace("`", "") + "}")
        assert list(written) == list(strategy_parameters(name)), name  # every parameter, in the config's order
        assert strategy_config(name, **written) == strategy_config(name), name  # at its default


@pytest.mark.parametrize("registry", [STRATEGIES, CODECS, SELECTORS, AVAILABILITY], ids=lambda r: r.kind)
def test_every_parameter_has_help(registry):
    for name in registry.names():
        for field in registry.fields(name):
            assert str(field.metadata.get("help", "")).strip(), f"{registry.kind} {name}: {field.name}"


def test_yaml_numbers_reach_strategies_as_numbers():
    from aggregation import build_strategy

    strategy = build_strategy("dp_fedavg", **yaml.safe_load("{delta: 1e-5, clip_norm: 2}"))
    assert strategy.config.delta == 1e-5 and strategy.config.clip_norm == 2.0
    assert isinstance(strategy.config.clip_norm, float)
    assert build_strategy("fedprox", partial_work=True).config.partial_work is True  # a bool stays a bool
