"""A run folder as bytes and back: how a run made in a Ray task on another node (a sweep's trial, a plan's
probe) reaches the driver's disk, with no disk shared between nodes."""

from __future__ import annotations

from pathlib import Path


def folder_files(folder: Path) -> dict[str, bytes]:
    """Every file under `folder`: its path relative to the folder -> its content."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def write_files(folder: Path, files: dict[str, bytes]) -> None:
    """Write what `folder_files` read, under `folder`."""
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
