"""Selection policies by name: each policy is its own typed config."""

import pytest

from aggregation.registry import RegistryError
from fleet.selection import SELECTORS, Oort, ResourceAware, Uniform, build_selector


def test_policies_by_name_with_their_defaults():
    assert SELECTORS.names() == ["oort", "resource", "uniform"]
    assert build_selector("uniform") == Uniform()
    assert build_selector("resource", floor=0.1) == ResourceAware(floor=0.1)
    assert SELECTORS.parameters("oort") == {"preferred_duration_s": 60.0, "alpha": 2.0, "exploration": 0.2}


def test_yaml_numbers_are_read_as_numbers():
    assert build_selector("oort", preferred_duration_s="1.2e2").preferred_duration_s == 120.0


def test_unknown_policy_or_parameter_is_named():
    with pytest.raises(RegistryError, match="unknown selection policy 'greedy'"):
        build_selector("greedy")
    with pytest.raises(RegistryError, match="selection policy 'oort' has no parameter greed"):
        build_selector("oort", greed=3)
    assert Oort(exploration=0.5).exploration == 0.5  # policies stay plain dataclasses
