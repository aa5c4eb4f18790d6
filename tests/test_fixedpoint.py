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
