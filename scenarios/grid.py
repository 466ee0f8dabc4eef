"""The trials of a sweep: `field.path=v1,v2,v3` lists in, their cartesian product out, in the order given
(the first list varies slowest). Values are YAML, read exactly as `--set` reads them. Seeds (`--seeds N`) are
one more axis, the last, so that the trials of one setting over its seeds sit next to each other."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

import yaml

from scenarios.errors import ScenarioError

SEED = "seed"
NAME_CHARS = 60  # of a trial's folder name after its number


@dataclass(frozen=True)
class Axis:
    field: str
    values: tuple[str, ...]  # the YAML text of each value


@dataclass(frozen=True)
class Trial:
    index: int
    settings: tuple[tuple[str, str], ...]  # (field path, YAML text) per axis

    @property
    def overrides(self) -> list[str]:
        return [f"{field}={value}" for field, value in self.settings]

    @property
    def name(self) -> str:
        """The trial's folder name: its number, then its values (last part of each field) in short. The seed
        comes last and is never cut, so that the folders of one setting tell their seeds apart."""
        seed = "".join(f"_seed-{value}" for field, value in self.settings if field == SEED)
        words = "_".join(f"{field.rsplit('.', 1)[-1]}-{value}" for field, value in self.settings if field != SEED)
        slug = (_slug(words)[:NAME_CHARS - len(seed)] + seed).strip("_")
        return f"{self.index:03d}-{slug}" if slug else f"{self.index:03d}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


def split_values(text: str) -> list[str]:
    """Split on commas outside brackets and quoted strings: "[{a: 1}, {b: 2}],'x,y'" is two values. As in
    YAML, a quote opens a string only where a value starts (so o'brien is plain text)."""
    values, depth, quote, start = [], 0, None, 0
    for i, char in enumerate(text):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"" and text[:i].rstrip()[-1:] in ("", ",", "[", "{", ":"):
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            values.append(text[start:i].strip())
            start = i + 1
    if quote or depth:
        raise ValueError("unbalanced brackets or quotes")
    return values + [text[start:].strip()]


def parse_axis(item: str) -> Axis:
    field, sep, text = item.partition("=")
    field = field.strip()
    if not sep or not field:
        raise ScenarioError(f"--set {item!r}: expected field.path=value or field.path=v1,v2,...")
    try:
        values = split_values(text)
        for value in values:
            if not value:
                raise ValueError("empty value")
            yaml.safe_load(value)
    except (ValueError, yaml.YAMLError) as err:
        raise ScenarioError(f"--set {item!r}: {err}") from None
    return Axis(field, tuple(values))


def seed_values(base: int, count: int) -> list[int]:
    """`count` seeds from the scenario's own: base, base + 1, ..., base + count - 1."""
    if count < 1:
        raise ScenarioError(f"--seeds {count}: give at least 1")
    return list(range(base, base + count))


def grid(sets: list[str], seeds: list[int] = ()) -> list[Trial]:
    """The product of the `sets` axes, and of `seeds` as the last axis when given."""
    axes = [parse_axis(item) for item in sets]
    if seeds:
        if any(a.field == SEED for a in axes):
            raise ScenarioError("--seeds and --set seed=... both set the seed: give one of them")
        axes.append(Axis(SEED, tuple(str(s) for s in seeds)))
    fields = [a.field for a in axes]
    repeated = sorted({f for f in fields if fields.count(f) > 1})
    if repeated:
        raise ScenarioError(f"--set: {', '.join(repeated)} given more than once; list its values in one --set")
    combos = itertools.product(*(a.values for a in axes))
    return [Trial(i, tuple(zip(fields, combo))) for i, combo in enumerate(combos)]
