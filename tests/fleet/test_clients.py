"""The device's side of an update: personal part kept between sessions, only shared entries sent,
attackers corrupt what they send, codecs set the payload."""

import numpy as np
import torch

from aggregation import AdapterLayout, ClientConfig, StrategyContext, build_strategy
from aggregation.compression import ErrorFeedback, build_codec
from fleet.attacks import Attack
from fleet.clients import ClientSide
from fleet.trainer import TrainJob, TrainResult

LAYOUT = AdapterLayout.from_shapes(
    [("m.lora_A.default.weight", (2, 3)), ("m.lora_B.default.weight", (4, 2))], rank=2, scaling=1.0
)
P = LAYOUT.size  # 6 A entries, then 8 B entries
A, B = LAYOUT.mask(["lora_A"]), LAYOUT.mask(["lora_B"])


def client_side(name="fedavg", attack=Attack(), attackers=(), codec=None):
    strategy = build_strategy(name)
    strategy.setup(StrategyContext(LAYOUT))
    flags = np.zeros(10, bool)
    flags[list(attackers)] = True
    return ClientSide(LAYOUT, strategy, torch.arange(P, dtype=torch.float32), 0, attack, flags, codec)


def result(client, delta, rnd=1):
    return TrainResult(TrainJob(client, 0, rnd, 0, steps=2), torch.as_tensor(delta, dtype=torch.float32), 50, 1.0, 0.5)


def test_fedsa_keeps_b_on_the_device_and_sends_a():
    side = client_side("fedsa_lora")
    glob = torch.zeros(P)
    assert torch.equal(side.start(3, glob)[B], torch.arange(P, dtype=torch.float32)[B])  # initial B
    update, nbytes = side.send(result(3, torch.ones(P)), ClientConfig(), 50)
    assert torch.equal(update.delta[A], torch.ones(6)) and not update.delta[B].any()
    assert nbytes == 4 * 6
    assert torch.equal(side.start(3, glob)[B], torch.arange(P, dtype=torch.float32)[B] + 1)  # kept
    assert torch.equal(side.start(4, glob)[B], torch.arange(P, dtype=torch.float32)[B])  # others unchanged
    assert torch.equal(side.start(3, glob)[A], glob[A])


def test_attackers_flip_and_others_do_not():
    side = client_side(attack=Attack(fraction=0.1, kind="sign_flip", scale=4.0), attackers=[2])
    honest, _ = side.send(result(1, torch.ones(P)), ClientConfig(), 50)
    flipped, _ = side.send(result(2, torch.ones(P)), ClientConfig(), 50)
    assert torch.equal(honest.delta, torch.ones(P)) and torch.equal(flipped.delta, -4 * torch.ones(P))
    assert Attack(fraction=0.2).attackers(0, 1000).sum() == 200


def test_client_clipping_and_codec_payload():
    side = client_side()
    clipped, _ = side.send(result(1, torch.full((P,), 3.0)), ClientConfig(clip_norm=0.5), 50)
    assert abs(float(clipped.delta.norm()) - 0.5) < 1e-5
    codec = build_codec("q8")
    side = client_side(codec=ErrorFeedback(codec))
    update, nbytes = side.send(result(1, torch.linspace(-1, 1, P)), ClientConfig(), 50)
    assert nbytes == codec.encoded_bytes(P) == len(codec.encode(torch.zeros(P)))
    assert torch.allclose(update.delta, torch.linspace(-1, 1, P), atol=1 / 127)


def test_a_diverged_update_reaches_the_screen_without_touching_the_residual():
    """A NaN delta cannot be encoded: it goes on as it is (the server's screen rejects it), its bytes are
    what the codec would have sent, and the device's error-feedback residual is left as it was."""
    codec = build_codec("q8")
    side = client_side(codec=ErrorFeedback(codec))
    side.send(result(1, torch.linspace(-1, 1, P)), ClientConfig(), 50)
    residual = side.codec.residual[1].clone()
    diverged = torch.ones(P)
    diverged[3] = float("nan")
    update, nbytes = side.send(result(1, diverged), ClientConfig(), 50)
    assert update.delta.isnan().sum() == 1 and nbytes == codec.encoded_bytes(P)
    assert torch.equal(side.codec.residual[1], residual)


def test_personal_parts_match_float16_tensors_kept_per_device():
    # The personal parts live in a float16 block store; each device's part after several sessions is its
    # part as float16 tensors kept per device would hold it: (previous part + personal delta), rounded.
    side = client_side("fedsa_lora")
    initial = torch.arange(P, dtype=torch.float32)[B]
    g, kept = torch.Generator().manual_seed(2), {}
    for rnd in range(1, 25):
        device = int(torch.randint(0, 6, (1,), generator=g))
        delta = torch.randn(P, generator=g) * 0.37
        before = kept.get(device, initial)
        side.send(result(device, delta, rnd), ClientConfig(), 50)
        kept[device] = (before + delta[B]).half().float()
    for device in range(8):
        expected = kept.get(device, initial)
        assert torch.equal(side.personal_part(device), expected)
        assert torch.equal(side.start(device, torch.zeros(P))[B], expected)
    assert len(side.personal) == len(kept)


def test_state_in_files_gives_the_same_updates(tmp_path):
    # Personal parts and residuals kept in files under state_dir: every update and every stored part is what
    # the same sessions give with both in RAM.
    def side(state_dir=None):
        strategy = build_strategy("fedsa_lora")
        strategy.setup(StrategyContext(LAYOUT))
        residual_dir = None if state_dir is None else state_dir / "residual"
        return ClientSide(LAYOUT, strategy, torch.arange(P, dtype=torch.float32), 0, Attack(), np.zeros(10, bool),
                          ErrorFeedback(build_codec("q4"), residual_dir), state_dir)

    ram, files, g = side(), side(tmp_path / "state"), torch.Generator().manual_seed(6)
    for rnd in range(1, 30):
        job = result(int(torch.randint(0, 10, (1,), generator=g)), torch.randn(P, generator=g), rnd)
        (a, bytes_a), (b, bytes_b) = ram.send(job, ClientConfig(), 50), files.send(job, ClientConfig(), 50)
        assert torch.equal(a.delta, b.delta) and bytes_a == bytes_b
    for device in range(10):
        assert torch.equal(files.personal_part(device), ram.personal_part(device))
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.bin")) == [
        "state/personal/block_000000.bin", "state/residual/block_000000.bin"]


# Partial aggregation end to end on the device and the server, worked out by hand (REFERENCE.md section 1).
# One module, A (1 x 2) and B (2 x 1), then a bottleneck adapter of 2 entries: flat (a1, a2, b1, b2, u1, u2).
SMALL = AdapterLayout.from_shapes(
    [("m.lora_A.default.weight", (1, 2)), ("m.lora_B.default.weight", (2, 1)), ("m.adapter.weight", (2,))],
    rank=1, scaling=1.0,
)
SMALL_START = torch.tensor([1.0, 2.0, 0.0, 0.0, 0.0, 0.0])  # A_0 = (1, 2), B_0 = 0, adapter 0


def small_round(name, deltas, counts, **params):
    """One round of two clients through their ClientSide and the server: (strategy, side, next global, bytes)."""
    strategy = build_strategy(name, **params)
    strategy.setup(StrategyContext(SMALL))
    side = ClientSide(SMALL, strategy, SMALL_START.clone(), 0, Attack(), np.zeros(4, bool))
    sent = [side.send(TrainResult(TrainJob(k, 0, 1, 0, steps=2), torch.tensor(d), n, 1.0, 0.5), ClientConfig(), n)
            for k, (d, n) in enumerate(zip(deltas, counts))]
    out = strategy.aggregate(SMALL_START.clone(), 0, [u for u, _ in sent])
    return strategy, side, out, [nbytes for _, nbytes in sent]


def test_ffa_lora_round_by_hand_is_exact():
    # p = (1/4, 3/4). The clients' A deltas are not sent (A is frozen; here the devices even moved it).
    # B = 1/4 (2, 0) + 3/4 (0, 4) = (0.5, 3); adapter = 1/4 (4, 0) + 3/4 (0, 4) = (1, 3); A stays (1, 2).
    deltas = [[0.5, 0.5, 2.0, 0.0, 4.0, 0.0], [1.0, 1.0, 0.0, 4.0, 0.0, 4.0]]
    _, _, out, nbytes = small_round("ffa_lora", deltas, [1, 3])
    assert out.tolist() == [1.0, 2.0, 0.5, 3.0, 1.0, 3.0]
    # B A_0 = [[0.5, 1], [3, 6]] = 1/4 [[2, 4], [0, 0]] + 3/4 [[0, 0], [4, 8]] = sum_k p_k B_k A_0: exact
    assert SMALL.products(out)[0].tolist() == [[0.5, 1.0], [3.0, 6.0]]
    assert nbytes == [16, 16]  # B and the adapter: 4 float32 values


def test_fedsa_lora_round_by_hand():
    # A shared: (1, 2) + 1/4 (2, 0) + 3/4 (0, 4) = (1.5, 5); B personal: each device keeps B_0 + its delta,
    # (1, 1) and (5, -1), and the server's B stays B_0 = 0; the adapter is shared: (1, 3).
    deltas = [[2.0, 0.0, 1.0, 1.0, 4.0, 0.0], [0.0, 4.0, 5.0, -1.0, 0.0, 4.0]]
    _, side, out, nbytes = small_round("fedsa_lora", deltas, [1, 3])
    assert out.tolist() == [1.5, 5.0, 0.0, 0.0, 1.0, 3.0]
    assert side.start(0, out).tolist() == [1.5, 5.0, 1.0, 1.0, 1.0, 3.0]
    assert side.start(1, out).tolist() == [1.5, 5.0, 5.0, -1.0, 1.0, 3.0]
    # the client's model: its own B times the global A, B_1 A = [[1.5, 5], [1.5, 5]]
    assert SMALL.products(side.start(0, out))[0].tolist() == [[1.5, 5.0], [1.5, 5.0]]
    assert nbytes == [16, 16]  # A and the adapter


def test_pwff_round_by_hand():
    # The adapter is shared: 1/4 (4, 0) + 3/4 (0, 4) = (1, 3); A and B stay on the devices; the proximal mu
    # travels in the config.
    deltas = [[2.0, 0.0, 1.0, 1.0, 4.0, 0.0], [0.0, 4.0, 5.0, -1.0, 0.0, 4.0]]
    strategy, side, out, nbytes = small_round("pwff", deltas, [1, 3], mu=0.3)
    assert out.tolist() == [1.0, 2.0, 0.0, 0.0, 1.0, 3.0]
    assert side.start(0, out).tolist() == [3.0, 2.0, 1.0, 1.0, 1.0, 3.0]
    assert side.start(1, out).tolist() == [1.0, 6.0, 5.0, -1.0, 1.0, 3.0]
    assert nbytes == [8, 8]  # the adapter only
    assert strategy.configure(0, 1) == ClientConfig(prox_mu=0.3)
