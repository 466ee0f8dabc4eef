"""A run's checkpoint: one safetensors file, written whole or not at all.

The emulator's state is a tree of dicts and lists holding tensors, numpy arrays and plain values (numbers,
strings, None). Tensors and arrays go into the file as tensors; the tree's shape, with each tensor replaced
by its key, goes into the file's metadata as JSON. Nothing is pickled, so loading a checkpoint runs no code
from the file.

The file is written under a temporary name, flushed to disk and renamed into place; the checkpoint it
replaces is kept beside it as the previous one (`previous(path)`). A crash at any instant leaves a whole
checkpoint: the new one, the old one, or both.

A SHA-256 over the tree and every tensor's bytes is kept in the metadata, so that a file damaged afterwards
(bytes flipped, or cut short) is refused by `load` with `DamagedCheckpoint` instead of resuming wrong
numbers. A file written before the checksum existed loads unchecked.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

FORMAT = "fedfleet-checkpoint-1"


class DamagedCheckpoint(ValueError):
    """A checkpoint file that cannot be trusted: cut short, unreadable, or failing its checksum."""


def previous(path: Path) -> Path:
    """Where the checkpoint that `save` replaced is kept."""
    return path.with_name(path.stem + ".previous" + path.suffix)


def save(path: Path, tree: dict) -> None:
    tensors: dict[str, torch.Tensor] = {}
    skeleton = json.dumps(_flatten(tree, tensors, {}, set()))
    tensors = {k: t.contiguous() for k, t in tensors.items()}
    tmp = path.with_name("." + path.name + ".tmp")
    try:
        digest = _digest(skeleton, tensors, lambda key: [tensors[key].reshape(-1).view(torch.uint8).numpy()])
        save_file(tensors, tmp, metadata={"format": FORMAT, "tree": skeleton, "sha256": digest})
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
    except BaseException:  # a full disk, say: no half-written file left taking space
        tmp.unlink(missing_ok=True)
        raise
    if path.exists():
        os.replace(path, previous(path))
    os.replace(tmp, path)
    _sync_dir(path.parent)


def load(path: Path) -> dict:
    """The tree saved at `path`. Its tensors are views of the file mapped into memory, so that a large
    per-device state is copied into its stores page by page, never whole into the driver's memory."""
    try:
        meta, tensors, spans = _mapped_tensors(path)
    except (ValueError, KeyError, OverflowError) as err:  # a header cut or garbled, data cut short
        raise DamagedCheckpoint(f"{path}: unreadable ({type(err).__name__}: {err})") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a checkpoint of this format (format {meta.get('format')!r})")
    if "sha256" in meta:
        # Read from the file, not through the mapping: the pages would stay counted in the driver's memory.
        with open(path, "rb") as f:
            if _digest(meta["tree"], tensors, lambda key: _read(f, *spans[key])) != meta["sha256"]:
                raise DamagedCheckpoint(f"{path}: its contents do not match its SHA-256 checksum")
    return _unflatten(json.loads(meta["tree"]), tensors)


def _digest(skeleton: str, tensors: dict[str, torch.Tensor], chunks) -> str:
    """SHA-256 of the tree and of each tensor's name, type, shape and bytes (`chunks(key)`), in name order."""
    h = hashlib.sha256(skeleton.encode())
    for key in sorted(tensors):
        t = tensors[key]
        h.update(f"{key}:{str(t.dtype)}:{tuple(t.shape)};".encode())
        if t.numel():
            for chunk in chunks(key):
                h.update(chunk)
    return h.hexdigest()


def _read(f, start: int, end: int, chunk: int = 1 << 24):
    f.seek(start)
    while start < end:
        data = f.read(min(chunk, end - start))
        if not data:
            raise DamagedCheckpoint(f"{f.name}: cut short")
        start += len(data)
        yield data


def _mapped_tensors(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor], dict[str, tuple[int, int]]]:
    """(metadata, tensors, each tensor's byte span in the file) of a safetensors file, laid out as an 8-byte
    little-endian header length, a JSON header of dtype, shape and byte range per tensor (and the metadata),
    then the data."""
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))
    meta = header.pop("__metadata__", None) or {}
    out, spans = {}, {}
    for key, entry in header.items():
        start, end = entry["data_offsets"]
        spans[key] = (8 + size + start, 8 + size + end)
        dtype = np.dtype(_DTYPES[entry["dtype"]])
        if end == start:
            out[key] = torch.from_numpy(np.zeros(entry["shape"], dtype))
            continue
        # Copy-on-write: a tensor changed in place changes this process's copy of the page, never the file.
        out[key] = torch.from_numpy(np.memmap(path, dtype=dtype, mode="c", offset=8 + size + start,
                                              shape=tuple(entry["shape"])))
    return meta, out, spans


_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
           "U8": "u1", "BOOL": "?"}


def _flatten(node: Any, tensors: dict[str, torch.Tensor], seen: dict[int, str], storages: set[int]) -> Any:
    """The JSON skeleton of `node`; its tensors and arrays are added to `tensors` under fresh keys. A tensor
    met twice (the global adapter is also a kept version) is stored once; one that shares memory with
    another (its storage in `storages`) is copied, as safetensors stores each storage once."""
    if isinstance(node, (torch.Tensor, np.ndarray)):
        kind = "tensor" if isinstance(node, torch.Tensor) else "array"
        if id(node) not in seen:
            t = node.detach().cpu() if kind == "tensor" else torch.from_numpy(np.ascontiguousarray(node))
            storage = t.untyped_storage().data_ptr()
            seen[id(node)] = key = f"t{len(tensors)}"
            tensors[key] = t.clone() if storage in storages else t
            storages.add(storage)
        return {kind: seen[id(node)]}
    if isinstance(node, dict):  # keys may be ints (versions, device ids): kept with their type
        return {"items": [[k, _flatten(v, tensors, seen, storages)] for k, v in node.items()]}
    if isinstance(node, (list, tuple)):
        return {"list": [_flatten(v, tensors, seen, storages) for v in node]}
    if isinstance(node, (set, frozenset)):
        return {"set": sorted(node)}
    if isinstance(node, np.generic):
        node = node.item()
    if node is None or isinstance(node, (bool, int, float, str)):
        return {"value": node}
    raise TypeError(f"cannot checkpoint a {type(node).__name__}")


def _unflatten(node: dict, tensors: dict[str, torch.Tensor]) -> Any:
    (kind, value), = node.items()
    if kind == "tensor":
        return tensors[value]
    if kind == "array":
        return tensors[value].numpy()
    if kind == "items":
        return {k: _unflatten(v, tensors) for k, v in value}
    if kind == "list":
        return [_unflatten(v, tensors) for v in value]
    if kind == "set":
        return set(value)
    return value


def _sync_dir(folder: Path) -> None:
    """Make the rename itself durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
