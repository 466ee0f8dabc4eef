"""Named random streams: every draw in a run comes from a stream keyed by (seed, purpose, keys...).

Keying by purpose and by client or round, rather than drawing from one shared generator in order, is what
makes a run independent of how many workers there are and of the order in which events are processed.
"""

from __future__ import annotations

import hashlib

import numpy as np


def stream_key(seed: int, purpose: str, *keys: object) -> int:
    """A stable 64-bit integer for (seed, purpose, keys); Python's hash() is salted per process."""
    text = "\x1f".join([str(int(seed)), purpose, *map(str, keys)])
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def stream(seed: int, purpose: str, *keys: object) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(stream_key(seed, purpose, *keys)))
