"""One measurement of a benchmark in its own process, with that process's own peak memory, so that the engine
under test and its baseline, timed in the same run, each get their own figure.

The peak is VmHWM of the child (/proc/self/status), not its ru_maxrss: Linux keeps ru_maxrss across exec, so
a spawned child's ru_maxrss starts at its parent's peak."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable

from procfs import memory_mb


def _measured(fn: Callable, args: tuple) -> tuple[Any, float]:
    result = fn(*args)
    return result, memory_mb()["VmHWM"] * 2**20 / 1e9


def in_child(fn: Callable, *args) -> tuple[Any, float]:
    """fn(*args) in a fresh process (multiprocessing's 'spawn'): (its result, the child's peak memory in GB).
    fn must be a module-level function; an exception in the child is raised here."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_measured, fn, args).result()


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0))
