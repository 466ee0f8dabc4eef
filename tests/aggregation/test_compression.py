"""Upload codecs: exact payload sizes, round-trip error bounds, packing, error feedback."""

import struct

import numpy as np
import pytest
import torch

from aggregation.compression import Q4, Q8, ErrorFeedback, NoCompression, TopK, build_codec, codec_names


def vector(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=g) * torch.logspace(-4, 0, n)[torch.randperm(n, generator=g)]


CODECS = [NoCompression(), TopK(0.01), TopK(0.3), TopK(1.0), Q8(), Q4(), Q4(chunk=3)]


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: f"{c.name}")
def test_encoded_bytes_is_the_payload_length(codec):
    for n in (1, 2, 3, 255, 256, 257, 1001):
        payload = codec.encode(vector(n, seed=n))
        assert isinstance(payload, bytes)
        assert len(payload) == codec.encoded_bytes(n)
        assert codec.decode(payload, n).shape == (n,)
    with pytest.raises(ValueError, match="expected"):
        codec.decode(codec.encode(vector(10)) + b"\0", 10)


def test_no_compression_is_exact():
    x = vector(500)
    assert torch.equal(NoCompression().decode(NoCompression().encode(x), 500), x)


def test_topk_keeps_the_largest_entries():
    x = torch.tensor([0.1, -5.0, 3.0, 0.2, -0.05])
    codec = TopK(0.4)  # k = ceil(0.4 * 5) = 2
    out, nbytes = codec.roundtrip(x)
    assert torch.equal(out, torch.tensor([0.0, -5.0, 3.0, 0.0, 0.0]))
    assert nbytes == 2 * (4 + 4)
    assert TopK(0.001).roundtrip(x)[1] == 8  # at least one entry
    # Error of a larger vector: exactly the energy of the entries left out.
    x = vector(2000)
    out, _ = TopK(0.05).roundtrip(x)
    kept = x.abs().sort(descending=True).values
    assert float((x - out).pow(2).sum()) == pytest.approx(float(kept[100:].pow(2).sum()), rel=1e-6)
    assert int((out != 0).sum()) == 100


@pytest.mark.parametrize("quantize,levels", [(Q8, 127), (Q4, 7)])
def test_quantisation_error_is_within_half_a_step_per_chunk(quantize, levels):
    x = vector(1000, seed=quantize.bits)
    codec = quantize(chunk=64)
    out = codec.decode(codec.encode(x), 1000)
    for c in range(0, 1000, 64):
        chunk, dec = x[c : c + 64], out[c : c + 64]
        step = float(chunk.abs().max()) / levels
        assert float((chunk - dec).abs().max()) <= step / 2 * (1 + 1e-5)
        assert torch.equal(torch.sign(dec[dec != 0]), torch.sign(chunk[dec != 0]))
    zeros = x.clone()
    zeros[::3] = 0.0
    assert (codec.decode(codec.encode(zeros), 1000)[::3] == 0).all()  # entries not trained stay zero


def test_four_bit_packing_by_hand():
    codec = Q4(chunk=4)
    payload = codec.encode(torch.tensor([7.0, -7.0, 0.0, 3.6]))
    # scale 7 / 7 = 1; codes 7, -7, 0, 4; offset by 8: 15, 1, 8, 12; low nibble first: 0x1F, 0xC8.
    assert payload == struct.pack("<f", 1.0) + bytes([0x1F, 0xC8])
    assert torch.equal(codec.decode(payload, 4), torch.tensor([7.0, -7.0, 0.0, 4.0]))


def test_payload_sizes_relative_to_float32():
    n = 100_000
    plain = NoCompression().encoded_bytes(n)
    assert plain == 400_000
    assert 1 / 8 <= Q4().encoded_bytes(n) / plain <= 1 / 8 * 1.04  # + one float32 scale per 256
    assert 1 / 4 <= Q8().encoded_bytes(n) / plain <= 1 / 4 * 1.02
    assert TopK(0.01).encoded_bytes(n) / plain == pytest.approx(0.02)  # index + value per kept entry


@pytest.mark.parametrize("codec", [TopK(0.05), Q4(chunk=64)], ids=lambda c: c.name)
def test_error_feedback_sum_of_uploads_converges_to_sum_of_deltas(codec):
    n, T = 400, 300
    g = torch.Generator().manual_seed(3)
    drift = torch.randn(n, generator=g) * 0.01  # a direction every round shares, as in training
    ef, plain_sum, sent_sum, true_sum = ErrorFeedback(codec), torch.zeros(n), torch.zeros(n), torch.zeros(n)
    relative, residual_norms = {}, []
    for t in range(1, T + 1):
        delta = drift + torch.randn(n, generator=g) * 0.01
        sent, nbytes = ef.compress(7, delta)
        assert nbytes == codec.encoded_bytes(n)
        true_sum += delta
        sent_sum += sent
        plain_sum += codec.roundtrip(delta)[0]
        # Invariant: what was sent plus what is held back is what was produced.
        assert torch.allclose(sent_sum + ef.residual[7], true_sum, atol=1e-4)
        residual_norms.append(float(ef.residual[7].norm()))
        if t in (T // 10, T):
            relative[t] = float((sent_sum - true_sum).norm() / true_sum.norm())
    assert max(residual_norms[T // 2 :]) <= 1.5 * max(residual_norms[: T // 2])  # bounded, not growing
    assert relative[T] < relative[T // 10] / 4  # the error of the sum shrinks like 1 / T
    without = float((plain_sum - true_sum).norm() / true_sum.norm())
    assert relative[T] < without / 5


def test_error_feedback_keeps_one_residual_per_client():
    ef = ErrorFeedback(TopK(0.5))
    ef.compress(1, torch.tensor([1.0, 0.4]))
    assert torch.equal(ef.residual[1], torch.tensor([0.0, 0.4]))
    sent, _ = ef.compress(2, torch.tensor([0.0, 0.3]))  # client 2 does not see client 1's residual
    assert torch.equal(sent, torch.tensor([0.0, 0.3]))
    sent, _ = ef.compress(1, torch.tensor([0.5, 0.0]))  # corrected: (0.5, 0.4) -> sends 0.5, keeps 0.4
    assert torch.equal(sent, torch.tensor([0.5, 0.0]))
    sent, _ = ef.compress(1, torch.tensor([0.0, 0.0]))
    assert torch.allclose(sent, torch.tensor([0.0, 0.4]))
    with pytest.raises(ValueError, match="residual"):
        ef.compress(1, torch.zeros(3))


def test_build_codec():
    assert codec_names() == ["none", "q4", "q8", "topk"]
    assert isinstance(build_codec("none"), NoCompression)
    assert build_codec("topk", fraction=0.2) == TopK(0.2)
    q4 = build_codec("q4", chunk=64)
    assert (q4.bits, q4.chunk, q4.name) == (4, 64, "q4")
    assert build_codec("q8").bits == 8
    with pytest.raises(ValueError, match="unknown codec"):
        build_codec("zip")
    with pytest.raises(ValueError, match="no parameter bits"):
        build_codec("q8", bits=4)
    with pytest.raises(ValueError, match="fraction"):
        build_codec("topk", fraction=0.0)
    with pytest.raises(ValueError, match="NaN"):
        build_codec("q8").encode(torch.tensor([1.0, float("nan")]))


@pytest.mark.parametrize("codec", [TopK(0.1), Q8(chunk=32), Q4(chunk=16)], ids=lambda c: c.name)
def test_error_feedback_matches_a_dict_of_float32_residuals(codec):
    # The residuals are kept in a block store; every upload equals what a dict of float32 tensors gives.
    g, n = torch.Generator().manual_seed(5), 97
    ef, residual = ErrorFeedback(codec), {}
    for t in range(60):
        client = int(torch.randint(0, 9, (1,), generator=g))
        delta = torch.randn(n, generator=g) * 0.01
        c = delta + residual[client] if client in residual else delta
        expected, expected_bytes = codec.roundtrip(c)
        residual[client] = c - expected
        sent, nbytes = ef.compress(client, delta)
        assert torch.equal(sent, expected) and nbytes == expected_bytes
    for client, e in residual.items():
        assert torch.equal(ef.residual[client], e)
    assert len(ef.residual) == len(residual)


def test_error_feedback_with_residuals_in_files_sends_the_same(tmp_path):
    g = torch.Generator().manual_seed(8)
    ram, files = ErrorFeedback(Q4(chunk=16)), ErrorFeedback(Q4(chunk=16), tmp_path / "residual")
    for _ in range(40):
        client, delta = int(torch.randint(0, 5, (1,), generator=g)), torch.randn(50, generator=g)
        (a, bytes_a), (b, bytes_b) = ram.compress(client, delta), files.compress(client, delta)
        assert torch.equal(a, b) and bytes_a == bytes_b
    assert all(torch.equal(ram.residual[c], files.residual[c]) for c in ram.residual.clients().tolist())
    assert [p.name for p in (tmp_path / "residual").iterdir()] == ["block_000000.bin"]


# Bytes on the wire worked out by hand (the test above compares encoded_bytes with the codec's own payload).
HAND_SIZES = [
    (NoCompression(), 100_000, 400_000),  # 4 B per float32
    (TopK(0.01), 100_000, 8_000),  # k = ceil(0.01 * 100000) = 1000; 4 B index + 4 B value each
    (TopK(0.3), 1001, 2_408),  # k = ceil(300.3) = 301; 8 * 301
    (TopK(0.001), 5, 8),  # at least one entry
    (Q8(), 100_000, 101_564),  # ceil(100000 / 256) = 391 scales of 4 B = 1564, + 1 B per value
    (Q4(), 100_000, 51_564),  # 1564 + 100000 / 2 (two 4-bit codes per byte)
    (Q8(), 257, 265),  # 2 chunks: 8 + 257
    (Q4(), 5, 7),  # 1 scale (4) + ceil(5 / 2) = 3
    (Q4(chunk=2), 5, 15),  # 3 scales (12) + 3
]


@pytest.mark.parametrize("codec, n, nbytes", HAND_SIZES, ids=lambda v: getattr(v, "name", str(v)))
def test_payload_bytes_by_hand(codec, n, nbytes):
    assert codec.encoded_bytes(n) == nbytes
    assert len(codec.encode(vector(n, seed=1))) == nbytes


def test_eight_bit_and_topk_payloads_by_hand():
    codec = Q8(chunk=4)
    payload = codec.encode(torch.tensor([127.0, -63.6, 0.0, 1.4]))
    # scale 127 / 127 = 1; codes round(127, -63.6, 0, 1.4) = (127, -64, 0, 1); int8 bytes 0x7F, 0xC0, 0x00, 0x01
    assert payload == struct.pack("<f", 1.0) + bytes([0x7F, 0xC0, 0x00, 0x01])
    assert torch.equal(codec.decode(payload, 4), torch.tensor([127.0, -64.0, 0.0, 1.0]))
    # top-2 of five: indices 1 and 2 ascending as uint32, then their float32 values
    payload = TopK(0.4).encode(torch.tensor([0.1, -5.0, 3.0, 0.2, -0.05]))
    assert payload == struct.pack("<2I2f", 1, 2, -5.0, 3.0)
