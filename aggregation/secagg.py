"""Secure aggregation (Bonawitz et al., "Practical Secure Aggregation for Privacy-Preserving Machine
Learning", CCS 2017), with the SecAgg+ neighbour graph as an option (Bell et al., CCS 2020).

Protocol, for participants U (the clients in the key exchange) working in the ring Z_{2^32}:

    encode     v_i = round(x_i 2^f) mod 2^32                 (x_i the client's weighted update, f frac_bits)
    mask       y_i = v_i + PRG(b_i) + sum_{j in N(i), i<j} PRG(s_ij) - sum_{j in N(i), i>j} PRG(s_ij)
    sum        z   = sum_{i in U3} y_i                        (U3: the clients whose y_i arrived)
    unmask     z  -= sum_{i in U3} PRG(b_i)                   (self masks, from shares of b_i)
               z  -= sum_{d in U \\ U3} sum_{j in N(d) & U3} +-PRG(s_jd)   (dropped clients' pair masks, from
                                                                           shares of their key)
    decode     sum_{i in U3} x_i ~= int32(z) / 2^f

Pairwise masks of two survivors cancel in the sum; a single y_i is uniform in Z_{2^32}^dim and says nothing
about x_i. Four message rounds: advertise keys, share keys, masked input, unmasking.

What is emulated rather than computed with cryptography: the pair seed s_ij, which Diffie-Hellman key
agreement would give both ends, is a BLAKE2b hash of (session seed, i, j) expanded by numpy's PCG64; the
Shamir t-out-of-n sharing of b_i and of the key behind s_ij is replaced by recomputing the secret, allowed
only when at least t of the clients holding shares answer the unmasking round (else AggregationError). The
arithmetic in the ring, the masks and their removal are the real protocol. `message_bytes` gives what each
client would send and receive, so the clock can charge the extra bytes and round trips.

Fixed point: with f fractional bits, each input must lie in (-2^(31-f), 2^(31-f)) and so must the sum;
the error of the decoded sum is at most |U3| 2^-(f+1). The default f = 24 gives a range of +-128 and a
resolution of 6e-8, fine enough for p_k-weighted LoRA deltas (often 1e-6 per entry).

Strategy "secagg_fedavg": x_{t+1} = x_t + eta * sum_k p_k Delta_k, with the sum computed by the protocol
above. Participants are the clients `configure` was called for at this version (selected, so in the key
exchange) plus those that reported; selected clients that never reported are the dropouts whose masks the
server removes. Secure aggregation needs synchronous rounds and cannot be combined with robust rules that
look at single updates.

Client duties: multiply the delta by p_k = n_k / sum_j n_j (a deployment would mask n_k Delta_k and n_k
together and divide after unmasking; the emulator knows the p_k), keep |Delta_k| inside the fixed-point
range, then mask. The upload is dim x 4 B whatever codec is configured.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch

from aggregation.base import AggregationError, ClientUpdate, RunSetting, Strategy, StrategyContext, Traits, stack_deltas
from aggregation.registry import param, register_strategy

RING_BITS = 32
PUBLIC_KEY_BYTES = 32  # each client advertises two (one for encrypting shares, one for masking)
SHARE_BYTES = 32  # one Shamir share of a 32-byte secret
ENCRYPTION_OVERHEAD_BYTES = 16  # authentication tag of the encrypted pair of shares
CLIENT_ID_BYTES = 4


def _seed(*parts: object) -> int:
    """A 64-bit seed from a hash of the parts (never Python's salted `hash`)."""
    return int.from_bytes(hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest(), "little")


def message_bytes(n_participants: int, dim: int, neighbours: int | None = None) -> dict:
    """Bytes one client sends and receives, as (up, down), in each of the four message rounds.

    Each client talks to m = n - 1 peers, or to its `neighbours` (SecAgg+). Advertise keys: up 2 public
    keys, down the peers' keys. Share keys: one encrypted pair of shares (of b_i and of the key secret) per
    peer, up and down. Masked input: up dim ring elements of 4 B, down the ids of the peers that survived.
    Unmasking: up one share per peer (b_j for a survivor, the key secret for a dropout).
    """
    if n_participants < 1 or dim < 0:
        raise ValueError(f"need n_participants >= 1 and dim >= 0, got {n_participants} and {dim}")
    m = n_participants - 1 if neighbours is None else min(neighbours, n_participants - 1)
    keys = 2 * PUBLIC_KEY_BYTES
    shares = 2 * SHARE_BYTES + ENCRYPTION_OVERHEAD_BYTES
    return {
        "advertise_keys": (keys, m * keys),
        "share_keys": (m * shares, m * shares),
        "masked_input": (dim * RING_BITS // 8, m * CLIENT_ID_BYTES),
        "unmasking": (m * SHARE_BYTES, 0),
        "rounds": 4,
    }


class SecAggSession:
    """One aggregation: the participants' masks over `dim` ring elements.

    threshold: shares needed to rebuild a secret; with `neighbours` (an even k < n - 1) each client shares
    its secrets with its k neighbours in a Harary graph over a seeded permutation of the participants, and
    the threshold applies to each neighbourhood.
    """

    def __init__(self, participants: list[int], dim: int, seed: int, threshold: int, frac_bits: int = 24,
                 neighbours: int | None = None):
        self.participants = sorted(set(int(c) for c in participants))
        if not self.participants:
            raise ValueError("a secure aggregation session needs at least one participant")
        if not 1 <= frac_bits <= RING_BITS - 2:
            raise ValueError(f"frac_bits must be in [1, {RING_BITS - 2}], got {frac_bits}")
        if neighbours is not None and (neighbours < 2 or neighbours % 2):
            raise ValueError(f"neighbours must be an even number >= 2, got {neighbours}")
        n = len(self.participants)
        k = n - 1 if neighbours is None else min(neighbours, n - 1)
        if not 1 <= threshold <= k + 1:
            raise ValueError(f"threshold must be in [1, {k + 1}] (the holders of each secret), got {threshold}")
        self.dim, self.seed, self.threshold, self.frac_bits = dim, seed, threshold, frac_bits
        self.range = 2.0 ** (RING_BITS - 1 - frac_bits)  # |input| and |sum| must stay below this
        self.neighbours = self._graph(k)

    def _graph(self, k: int) -> dict[int, list[int]]:
        n = len(self.participants)
        if k >= n - 1:
            return {i: [j for j in self.participants if j != i] for i in self.participants}
        order = np.random.default_rng(_seed(self.seed, "graph")).permutation(self.participants)
        out: dict[int, set[int]] = {int(i): set() for i in order}
        for pos, i in enumerate(order):
            for offset in range(1, k // 2 + 1):
                j = int(order[(pos + offset) % n])
                out[int(i)].add(j)
                out[j].add(int(i))
        return {i: sorted(js) for i, js in out.items()}

    def _prg(self, *parts: object) -> np.ndarray:
        return np.random.default_rng(_seed(self.seed, *parts)).integers(0, 2**RING_BITS, self.dim, dtype=np.uint32)

    def _self_mask(self, i: int) -> np.ndarray:
        return self._prg("self", i)

    def _signed_pair_mask(self, i: int, j: int) -> tuple[int, np.ndarray]:
        """(+1 or -1, PRG(s_ij)): the pair mask as client i adds it."""
        return (1 if i < j else -1), self._prg("pair", min(i, j), max(i, j))

    def mask(self, client: int, vector) -> np.ndarray:
        """y_i (dim,) uint32: the client's vector in fixed point plus its self mask and pair masks."""
        if client not in self.neighbours:
            raise ValueError(f"client {client} is not a participant of this session")
        x = np.asarray(vector, dtype=np.float64)
        if x.shape != (self.dim,):
            raise ValueError(f"client {client} vector has shape {x.shape}, the session expects ({self.dim},)")
        if not np.isfinite(x).all() or (np.abs(x) >= self.range).any():
            raise ValueError(f"client {client} vector leaves the fixed-point range (-{self.range}, {self.range})")
        y = (np.round(x * 2.0**self.frac_bits).astype(np.int64) & (2**RING_BITS - 1)).astype(np.uint32)
        y += self._self_mask(client)  # uint32 arrays wrap: arithmetic mod 2^32
        for j in self.neighbours[client]:
            sign, s = self._signed_pair_mask(client, j)
            if sign > 0:
                y += s
            else:
                y -= s
        return y

    def _reconstruct(self, owner: int, secret: str, responders: set[int]) -> None:
        """Shamir reconstruction of a secret of `owner`, emulated: it needs `threshold` shares."""
        holders = (set(self.neighbours[owner]) | {owner}) & responders
        if len(holders) < self.threshold:
            raise AggregationError(f"secure aggregation cannot rebuild the {secret} of client {owner}: "
                                   f"{len(holders)} share holders answered, threshold is {self.threshold}")

    def unmask(self, masked: dict[int, np.ndarray], survivors=None) -> np.ndarray:
        """sum_{i in U3} x_i (dim,) float64 from the masked vectors of U3 = masked.keys().

        survivors: the clients that answer the unmasking round (U4, a subset of U3; default all of U3).
        """
        U3 = set(masked)
        U4 = U3 if survivors is None else set(survivors)
        if not U3:
            raise AggregationError("secure aggregation received no masked input")
        if not U3 <= set(self.participants):
            raise AggregationError(f"clients {sorted(U3 - set(self.participants))} were not in the key exchange")
        if not U4 <= U3:
            raise AggregationError(f"clients {sorted(U4 - U3)} answer the unmasking without a masked input")
        if len(U4) < self.threshold:
            raise AggregationError(f"secure aggregation needs {self.threshold} clients in the unmasking round, "
                                   f"{len(U4)} answered")
        z = np.zeros(self.dim, dtype=np.uint32)
        for i in sorted(U3):
            y = masked[i]
            if y.shape != (self.dim,) or y.dtype != np.uint32:
                raise AggregationError(f"client {i} masked input is {y.dtype} {y.shape}, expected uint32 ({self.dim},)")
            z += y
        for i in sorted(U3):
            self._reconstruct(i, "self mask", U4)
            z -= self._self_mask(i)
        for d in sorted(set(self.participants) - U3):
            self._reconstruct(d, "key", U4)
            for j in self.neighbours[d]:
                if j in U3:  # pairs of two dropouts never entered the sum
                    sign, s = self._signed_pair_mask(j, d)
                    if sign > 0:
                        z -= s
                    else:
                        z += s
        return z.view(np.int32).astype(np.float64) / 2.0**self.frac_bits


@dataclass(frozen=True)
class SecAggConfig:
    threshold_fraction: float = param(0.5, "share of each secret's holders needed to rebuild it, in (0, 1]")
    server_lr: float = param(1.0, "server learning rate eta, > 0")
    frac_bits: int = param(24, f"fractional bits f of the fixed-point encoding, in [1, {RING_BITS - 2}]")
    neighbours: int = param(0, "SecAgg+: peers each client shares its secrets with, even; 0: every pair")

    def __post_init__(self) -> None:
        if not 0 < self.threshold_fraction <= 1:
            raise ValueError(f"threshold_fraction must be in (0, 1], got {self.threshold_fraction}")
        if not self.server_lr > 0:
            raise ValueError(f"server_lr must be > 0, got {self.server_lr}")
        if not 1 <= self.frac_bits <= RING_BITS - 2:
            raise ValueError(f"frac_bits must be in [1, {RING_BITS - 2}], got {self.frac_bits}")
        if self.neighbours < 0 or self.neighbours % 2:
            raise ValueError(f"neighbours must be 0 (every pair) or an even number >= 2, got {self.neighbours}")


@register_strategy
class SecAggFedAvg(Strategy):
    name = "secagg_fedavg"
    config_class = SecAggConfig
    state_attrs = ("_invited", "_recovered")
    # Advertise keys, share keys and unmasking are round trips beyond the masked upload; the server learns only
    # the sum, so it cannot screen updates one by one.
    traits = Traits(extra_round_trips=3, sees_updates=False)

    def __init__(self, config: SecAggConfig | None = None):
        super().__init__(config)
        self._reset()  # `configure` may be asked before `setup`: the scenario checks read a client's config

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        self._reset()

    def _reset(self) -> None:
        self._invited: dict[int, set[int]] = {}  # version -> clients selected for it (the key exchange)
        self._recovered = 0

    @property
    def _degree(self) -> int | None:
        """SecAgg+'s k, None for every pair."""
        return self.config.neighbours or None

    def objections(self, setting: RunSetting) -> list[tuple[str, str]]:
        found = super().objections(setting)
        if setting.compression not in (None, "none"):
            found.append(("strategy.compression", "secure aggregation masks every entry of the upload; "
                                                  f"use compression 'none' with {self.name}"))
        return found

    def configure(self, client: int, version: int):
        self._invited.setdefault(version, set()).add(client)
        return super().configure(client, version)

    def threshold(self, n: int) -> int:
        """t for n participants: ceil(threshold_fraction * n), capped by the holders of each secret."""
        k = self._degree
        holders = n if k is None else min(k, n - 1) + 1
        return min(holders, max(1, math.ceil(self.config.threshold_fraction * holders)))

    def aggregate(self, global_adapter: torch.Tensor, version: int, updates: list[ClientUpdate]) -> torch.Tensor:
        deltas, _ = stack_deltas(updates)
        clients = [u.client for u in updates]
        if len(set(clients)) != len(clients):
            raise AggregationError("secure aggregation takes one update per client and round")
        participants = sorted(self._invited.pop(version, set()) | set(clients))
        self._invited = {v: c for v, c in self._invited.items() if v > version}
        n_k = torch.tensor([u.num_samples for u in updates], dtype=torch.float64)
        p = n_k / n_k.sum()
        session = SecAggSession(participants, deltas.shape[1], _seed(self.context.seed, version, self.name),
                                self.threshold(len(participants)), self.config.frac_bits, self._degree)
        if float(deltas.abs().max()) >= session.range:  # then the p-weighted sum stays in range too
            raise AggregationError(f"an update leaves the secure-aggregation range +-{session.range}; "
                                   f"lower frac_bits")
        masked = {c: session.mask(c, (p_k * d.double()).numpy()) for c, p_k, d in zip(clients, p, deltas)}
        mean = torch.from_numpy(session.unmask(masked))
        self._recovered = len(participants) - len(clients)
        return global_adapter + (self.config.server_lr * mean).to(global_adapter.dtype)

    def extra_bytes(self, cohort_size: int) -> tuple[int, int]:
        """(up, down) bytes per client beyond the plain upload of the adapter and its download."""
        rounds = message_bytes(cohort_size, self.layout.size, self._degree)
        up = sum(rounds[r][0] for r in ("advertise_keys", "share_keys", "unmasking"))
        down = sum(rounds[r][1] for r in ("advertise_keys", "share_keys", "masked_input", "unmasking"))
        return up, down

    def metrics(self) -> dict[str, float]:
        return {"secagg_recovered": float(self._recovered)}  # dropouts whose pair masks were removed
