"""The README's strategy table lists every registered strategy with its parameters and their defaults."""

import re
from pathlib import Path

import yaml

from aggregation import strategy_names
from aggregation.registry import coerce_parameters, strategy_parameters

README = Path(__file__).parents[2] / "README.md"


def documented() -> dict[str, str]:
    rows = re.findall(r"^\| `(\w+)` \| ([^|]*) \|", README.read_text(), flags=re.M)
    return {name: params for name, params in rows}


def test_every_strategy_is_in_the_table_with_its_defaults():
    table = documented()
    assert set(strategy_names()) <= set(table)
    for name in strategy_names():
        params = table[name].strip()
        written = {} if params == "none" else yaml.safe_load("{" + params.replace("`", "") + "}")
        assert coerce_parameters(name, written) == strategy_parameters(name), name


def test_yaml_numbers_reach_strategies_as_numbers():
    from aggregation import build_strategy

    strategy = build_strategy("dp_fedavg", **yaml.safe_load("{delta: 1e-5, clip_norm: 2}"))
    assert strategy.delta == 1e-5 and strategy.S == 2.0
