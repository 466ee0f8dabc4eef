"""Training jobs gathered into groups on their way to the workers, so that a worker trains a group in one pass
(fleet/grouped.py).

The emulator asks for training one arrival at a time and waits for results only when the server aggregates
(or a version is evaluated). A `GroupedHost` stands between it and the pool: jobs of one base version join an
open group, which goes to a worker when it holds `group_size` jobs, or when the emulator waits for any
result. Groups are thus cut by the schedule alone (the order of arrivals and the server's steps), never by
the number of workers or by host timing, so a scenario and seed give the same numbers on 1 or N workers. At a
checkpoint the server has just waited for its results, so no group is open, and a resumed run forms the same
groups as one that never stopped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fleet.trainer import TrainJob

# The most clients one group may hold (runtime.group_size, the schema's bound, and where group_size: auto stops).
MAX_GROUP_SIZE = 1024


@dataclass
class _Group:
    base_delta: Any  # the handle of the base the group's jobs train on (FLoRA's merged weights; None: none)
    jobs: list[TrainJob] = field(default_factory=list)
    starts: list[Any] = field(default_factory=list)
    ref: Any = None  # the worker's result, a list in job order, once submitted


@dataclass(frozen=True)
class Member:
    """The handle of one job: its group and its place there."""

    group: _Group
    index: int


class GroupedHost:
    """A Host (fleet.emulator) over a WorkerPool that trains jobs in groups of up to `group_size`."""

    def __init__(self, pool, group_size: int):
        if group_size < 1:
            raise ValueError(f"group_size must be at least 1, got {group_size}")
        self.pool, self.group_size = pool, group_size
        self._open: dict[int, _Group] = {}  # base version -> the group its next job joins

    def put(self, tensor) -> Any:
        return self.pool.put(tensor)

    def train(self, job: TrainJob, start: Any, base_delta: Any) -> Member:
        group = self._open.setdefault(job.base_version, _Group(base_delta))
        group.jobs.append(job)
        group.starts.append(start)
        if len(group.jobs) == self.group_size:
            self._submit(job.base_version)
        return Member(group, len(group.jobs) - 1)

    def evaluate(self, adapter: Any, base_delta: Any) -> Any:
        return self.pool.evaluate(adapter, base_delta)

    def evaluate_clients(self, adapter: Any, groups: Any, clients: list, n_windows: int, base_delta: Any) -> Any:
        return self.pool.evaluate_clients(adapter, groups, clients, n_windows, base_delta)

    def get(self, handles: list) -> list:
        """The results of `handles`, in order; every open group goes to the workers first."""
        for version in sorted(self._open):
            self._submit(version)
        refs = [h.group.ref if isinstance(h, Member) else h for h in handles]
        unique = list(dict.fromkeys(refs))
        values = dict(zip(unique, self.pool.get(unique)))
        return [values[ref][h.index] if isinstance(h, Member) else values[ref] for h, ref in zip(handles, refs)]

    def _submit(self, version: int) -> None:
        group = self._open.pop(version)
        group.ref = self.pool.train_group(group.jobs, group.starts, group.base_delta)
