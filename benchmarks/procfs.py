"""What the benchmarks read of this process from /proc (Linux): memory, file descriptors, mapped files, and
the disk a folder takes."""

from __future__ import annotations

import os
from pathlib import Path


def memory_mb() -> dict[str, float]:
    """VmRSS, RssAnon, RssFile and VmHWM (the peak RSS) now, in MB, from /proc (Linux)."""
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                fields[name] = int(value.split()[0]) / 2**10  # kB
    return fields


def open_fds() -> int:
    """File descriptors open now; each mapped state block holds one (mmap keeps a duplicate)."""
    return len(os.listdir("/proc/self/fd"))


def disk_mb(directory: Path) -> float:
    """Bytes the files under `directory` take on disk: blocks are sparse until their rows are written."""
    return sum(p.stat().st_blocks * 512 for p in directory.rglob("*") if p.is_file()) / 2**20


def deleted_mapped_mb() -> float:
    """MB of files still mapped into the process though deleted: their disk space is held until unmapped."""
    total = 0
    with open("/proc/self/maps") as f:
        for line in f:
            if line.rstrip().endswith("(deleted)"):
                start, end = (int(x, 16) for x in line.split()[0].split("-"))
                total += end - start
    return total / 2**20


def folder_files(directory: Path) -> tuple[int, float]:
    """(files, MB on disk) under `directory`."""
    files = [p for p in directory.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_blocks * 512 for p in files) / 2**20
