"""Fixed-point encoding: clipping, unbiased stochastic rounding, exact decoding of sums mod 2^m."""

from __future__ import annotations

import numpy as np
import pytest

from privacy.backends import numpy_backend, pure_backend
from privacy.fixedpoint import FixedPointConfig, decode_sum, encode, quantize
from privacy.randomness import RandomStream

NB, PB = numpy_backend(), pure_backend()


def test_stochastic_rounding_is_unbiased_and_within_one_step() -> None:
    cfg = FixedPointConfig(clip=1.0, bits=8, modulus_bits=16)
    x = np.full(200_000, 0.3141)
    q = quantize(x, cfg, RandomStream(b"r" * 32), NB)
    y = 0.3141 * cfg.scale()
    assert set(np.unique(q).tolist()) == {int(np.floor(y)), int(np.floor(y)) + 1}
    assert abs(q.mean() - y) < 4 * 0.5 / np.sqrt(len(q))


def test_clipping_and_range() -> None:
    cfg = FixedPointConfig(clip=0.5, bits=10, modulus_bits=16)
    q = quantize(np.array([-5.0, -0.5, 0.0, 0.5, 7.0]), cfg, RandomStream(b"c" * 32), NB)
    assert q.tolist() == [-511, -511, 0, 511, 511]


@pytest.mark.parametrize("m", [16, 32])
def test_sum_of_encodings_decodes_exactly_to_the_sum_of_quantized_values(m: int) -> None:
    cfg = FixedPointConfig(clip=1.0, bits=12, modulus_bits=m)
    cfg.validate(8)
    rng = np.random.default_rng(0)
    xs = [rng.uniform(-1.2, 1.2, 1000) for _ in range(8)]
    streams = [RandomStream(bytes([i]) * 32) for i in range(8)]
    qs = [quantize(x, cfg, RandomStream(bytes([i]) * 32), NB) for i, x in enumerate(xs)]
    total = NB.zeros_field(1000, m)
    for x, s in zip(xs, streams, strict=True):
        total = NB.add_mod(total, encode(x, cfg, s, NB), m)
    np.testing.assert_allclose(decode_sum(total, cfg, 8, NB), np.sum(qs, axis=0) / cfg.scale(), rtol=0, atol=1e-12)
    assert np.abs(decode_sum(total, cfg, 8, NB) - np.clip(xs, -1, 1).sum(0)).max() <= 8 / cfg.scale()


def test_validate_and_pure_backend() -> None:
    with pytest.raises(ValueError, match="needs m >= 19"):
        FixedPointConfig(1.0, 16, 16).validate(8)
    with pytest.raises(ValueError):
        FixedPointConfig(0.0, 8, 16)
    with pytest.raises(ValueError):
        FixedPointConfig(1.0, 20, 16)
    cfg = FixedPointConfig(1.0, 8, 16)
    x = [0.1 * i for i in range(-12, 13)]
    assert quantize(np.array(x), cfg, RandomStream(b"p" * 32), NB).tolist() == \
        quantize(x, cfg, RandomStream(b"p" * 32), PB)


def test_non_finite_inputs_and_wrapping_sums_are_refused() -> None:
    cfg = FixedPointConfig(1.0, 8, 16)
    for be in (NB, PB):
        with pytest.raises(ValueError, match="coordinate 2 is not finite"):
            quantize([0.1, 0.2, float("nan"), 0.3], cfg, RandomStream(b"n" * 32), be)
        with pytest.raises(ValueError, match="coordinate 0 is not finite"):
            encode([float("inf")], cfg, RandomStream(b"n" * 32), be)
    # 2^9 inputs of 8 bits can exceed ±2^15: decoding such a count is refused instead of silently wrapping
    with pytest.raises(ValueError, match="needs m >= 17"):
        decode_sum(NB.zeros_field(4, 16), cfg, 512, NB)
    with pytest.raises(ValueError, match="count"):
        decode_sum(NB.zeros_field(4, 16), cfg, 0, NB)


@pytest.mark.parametrize("m", [16, 32])
def test_extreme_sums_decode_exactly_at_the_bound(m: int) -> None:
    """s inputs all at +c (or −c) give ±s·(2^(B−1)−1), the largest sums validate() admits: no wrap-around."""
    bits = m - 3  # m = B + log2(8)
    cfg = FixedPointConfig(1.0, bits, m)
    for sign in (1.0, -1.0):
        total = PB.zeros_field(3, m)
        for i in range(8):
            total = PB.add_mod(total, encode([sign * 5.0] * 3, cfg, RandomStream(bytes([i]) * 32), PB), m)
        top = (1 << (bits - 1)) - 1
        assert PB.field_to_signed(total, m) == [int(sign) * 8 * top] * 3
        assert decode_sum(total, cfg, 8, PB) == pytest.approx([sign * 8.0] * 3, abs=0)


def test_random_stream_is_deterministic_independent_and_uniform() -> None:
    a, b = RandomStream(b"a" * 32), RandomStream(b"a" * 32)
    assert a.bytes(100) == b.bytes(100) and a.bytes(10) != RandomStream(b"a" * 32).bytes(10)  # request counter
    assert RandomStream(b"b" * 32).bytes(32) != RandomStream(b"a" * 32).bytes(32)
    u_np = RandomStream(b"u" * 32).uniforms(50_000, NB)
    u_py = RandomStream(b"u" * 32).uniforms(50_000, PB)
    assert u_np.tolist() == u_py and min(u_py) >= 0.0 and max(u_py) < 1.0
    assert abs(float(u_np.mean()) - 0.5) < 0.01 and abs(float(u_np.var()) - 1 / 12) < 0.005
    w_np, w_py = RandomStream(b"w" * 32).uint32(1000, NB), RandomStream(b"w" * 32).uint32(1000, PB)
    assert w_np.tolist() == list(w_py)
    assert all(0 < v <= 1.0 for v in RandomStream(b"o" * 32).uniforms_open(1000, PB))
    with pytest.raises(ValueError, match="32 bytes"):
        RandomStream(b"short")
    assert len(RandomStream.from_os().bytes(16)) == 16
