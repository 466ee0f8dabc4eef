"""The registry of typed configs, strategies' traits as one record, and what a strategy objects to in a scenario."""

from dataclasses import dataclass

import pytest

from aggregation import RunSetting, Strategy, Traits, build_strategy
from aggregation.fedbuff import FedBuff, FedBuffConfig
from aggregation.registry import Registry, RegistryError, param, strategy_config


@dataclass(frozen=True)
class Knobs:
    rate: float = param(1.0, "a rate")
    count: int = param(2, "a count")
    flag: bool = param(False, "a flag")

    def __post_init__(self):
        if self.count < 0:
            raise ValueError(f"count: must be >= 0, got {self.count}")


@dataclass(frozen=True)
class Needs:
    path: str = param(help="required")


def registry() -> Registry:
    r = Registry("widget")
    r.register("knobs", Knobs)
    r.register("doubled", Knobs, lambda c: 2 * c.rate)
    r.register("needs", Needs)
    return r


def test_names_lookup_and_defaults():
    r = registry()
    assert r.names() == ["doubled", "knobs", "needs"] and "knobs" in r and "gears" not in r
    assert r.parameters("knobs") == {"rate": 1.0, "count": 2, "flag": False}
    assert r.build("knobs", count=3) == Knobs(1.0, 3, False)  # the config is the thing
    assert r.build("doubled", rate=4) == 8.0  # built from its config


def test_registering_a_name_twice_or_a_mutable_config_is_refused():
    r = registry()
    with pytest.raises(ValueError, match="widget 'knobs' is registered twice"):
        r.register("knobs", Knobs)

    @dataclass
    class Loose:
        x: int = 0

    with pytest.raises(TypeError, match="frozen dataclass"):
        r.register("loose", Loose)


def test_unknown_names_and_parameters_are_named():
    r = registry()
    with pytest.raises(RegistryError, match="unknown widget 'gears'; known: doubled, knobs, needs"):
        r.config("gears")
    with pytest.raises(RegistryError, match="widget 'knobs' has no parameter colour, size"):
        r.config("knobs", size=1, colour="red")
    with pytest.raises(ValueError, match="count: must be >= 0"):
        r.config("knobs", count=-1)
    with pytest.raises(RegistryError, match="widget 'needs' needs parameter path"):
        r.config("needs")


def test_yaml_values_are_coerced_to_the_declared_float():
    r = registry()
    config = r.config("knobs", rate="1e-5", count=3, flag=True)
    assert config.rate == 1e-5 and config.count == 3 and config.flag is True
    assert isinstance(r.config("knobs", rate=2).rate, float)
    assert r.config("knobs", rate=True).rate is True  # a bool is never read as a number
    with pytest.raises(ValueError, match="rate: expected a number, got 'fast'"):
        r.config("knobs", rate="fast")


def test_strategies_take_their_config_or_its_defaults():
    assert FedBuff().config == FedBuffConfig()
    assert FedBuff(FedBuffConfig(buffer_size=3)).ready(3)
    with pytest.raises(TypeError, match="fedbuff takes a FedBuffConfig"):
        FedBuff(strategy_config("fedasync"))
    with pytest.raises(ValueError, match="strategy 'fedavg' has no parameter momentum"):
        build_strategy("fedavg", momentum=0.9)


def test_traits_are_one_record_built_from_the_config():
    for flag in ("asynchronous", "concurrency", "max_staleness", "min_updates", "extra_round_trips",
                 "sees_updates", "partial_work"):
        assert not hasattr(Strategy, flag), flag
    assert build_strategy("fedavg").traits == Traits()
    assert build_strategy("fedbuff").traits == Traits(asynchronous=True)
    assert build_strategy("fedbuff", concurrency=12, max_staleness=3).traits == Traits(True, 12, 3)
    assert build_strategy("fedasync").traits == Traits(asynchronous=True, max_staleness=64)  # its history
    assert build_strategy("fedasync", max_staleness=2, concurrency=5).traits == Traits(True, 5, 2)
    assert build_strategy("krum", f=2).traits.min_updates == 7
    assert build_strategy("multikrum", f=0).traits.min_updates == 3
    assert build_strategy("secagg_fedavg").traits == Traits(extra_round_trips=3, sees_updates=False)


def test_partial_work_is_asked_of_clients():
    assert build_strategy("fedprox").configure(0, 0).partial_work is True
    assert build_strategy("fedprox", partial_work=False).configure(0, 0).partial_work is False
    assert build_strategy("fedavg").configure(0, 0).partial_work is False


def test_objections_name_the_field():
    plain = RunSetting(compression="q8", min_reports=1, multicast_download=True, shared_entries=10)
    assert build_strategy("fedavg").objections(plain) == []
    assert build_strategy("fedavg").objections(RunSetting()) == []  # nothing known: nothing judged

    (field, reason), = build_strategy("fedavg").objections(RunSetting(shared_entries=0))
    assert field == "strategy" and reason == "fedavg with personal [] and frozen [] leaves no parameter to aggregate"
    (_, reason), = build_strategy("pwff").objections(RunSetting(shared_entries=0))
    assert reason.endswith("leaves no parameter to aggregate (PWFF shares the bottleneck adapters: set "
                           "model.lora.bottleneck)")

    assert build_strategy("krum", f=2).objections(RunSetting(min_reports=6)) == [
        ("run.min_reports", "krum needs at least 7 updates to aggregate; set run.min_reports to 7 or more")]
    assert build_strategy("krum", f=2).objections(RunSetting(min_reports=7)) == []

    (field, reason), = build_strategy("fedbuff").objections(RunSetting(multicast_download=True, min_reports=1))
    assert field == "network.multicast_download" and reason.startswith("fedbuff invites devices a few at a time")


@pytest.mark.parametrize("name, params, start", [
    ("secagg_fedavg", {}, "secure aggregation masks every entry of the upload"),
    ("dp_fedavg", {"clipping": "client"}, "error feedback can push a client's upload past its clip norm"),
])
def test_strategies_that_refuse_a_codec(name, params, start):
    strategy = build_strategy(name, **params)
    (field, reason), = strategy.objections(RunSetting(compression="topk"))
    assert field == "strategy.compression" and reason.startswith(start)
    assert strategy.objections(RunSetting(compression="none")) == []
    assert build_strategy("dp_fedavg").objections(RunSetting(compression="topk")) == []  # the server clips
