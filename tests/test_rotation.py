"""The compact uplink's math (issue 16): the public-seed randomized block Hadamard rotation, conditional randomized
rounding (the sensitivity the accounting uses is enforced on every honest vector), and the modulus chosen from
what a group's sum needs – each checked against a direct computation, on the numpy and pure-Python paths."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from privacy.backends import numpy_backend, pure_backend
from privacy.client_pipeline import DistributedDPConfig, decode_sum, prepare_update, round_within
from privacy.randomness import RandomStream
from privacy.rotation import Rotation, block_size, padded_length, rotation_seed

SEED = bytes(range(32))


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 65, 1000, 2411, 4097, 101_771])
def test_blocks_are_powers_of_two_and_padding_stays_small(n: int) -> None:
    b, L = block_size(n), padded_length(n)
    assert b & (b - 1) == 0 and L % b == 0 and n <= L
    assert L - n <= max(n / 8, b - 1 if n < 8 else n / 8)


@pytest.mark.parametrize("n", [1, 5, 64, 300, 2411])
def test_the_rotation_is_orthogonal_and_its_inverse_undoes_it(n: int) -> None:
    rng = np.random.default_rng(n)
    x = rng.normal(size=n)
    r = Rotation(SEED, n)
    y = r.forward(x)
    assert len(y) == r.length
    assert math.isclose(float(np.linalg.norm(y)), float(np.linalg.norm(x)), rel_tol=1e-12)
    np.testing.assert_allclose(r.inverse(y), x, rtol=0, atol=1e-12)
    # flattening: a vector with all its norm in one coordinate comes out spread over its block
    e = np.zeros(n)
    e[0] = 1.0
    assert float(np.max(np.abs(r.forward(e)))) <= 1 / math.sqrt(r.block) + 1e-15


@pytest.mark.parametrize("n", [1, 7, 300, 2411, 4097])
def test_numpy_and_pure_python_rotations_are_bit_identical(n: int) -> None:
    x = np.random.default_rng(1).normal(size=n)
    r = Rotation(SEED, n)
    a, b = r.forward(x), r.forward([float(v) for v in x])
    assert np.asarray(a).tobytes() == np.asarray(b, dtype=np.float64).tobytes()
    ia, ib = r.inverse(a), r.inverse(list(b))
    assert np.asarray(ia).tobytes() == np.asarray(ib, dtype=np.float64).tobytes()


def test_the_rotation_seed_is_public_and_bound_to_the_round_seed() -> None:
    assert rotation_seed(SEED) == rotation_seed(SEED) != rotation_seed(bytes(32))
    assert Rotation(rotation_seed(SEED), 10).forward(np.ones(10)).tobytes() != \
        Rotation(rotation_seed(bytes(32)), 10).forward(np.ones(10)).tobytes()
    with pytest.raises(ValueError):
        rotation_seed(b"short")
    with pytest.raises(ValueError, match="rotation_seed"):
        DistributedDPConfig(1.0, 0.0, 8, 16, 1, 10, rotation_seed="xyz")


def _cfg(**kw: object) -> DistributedDPConfig:
    base = dict(l2_clip=2.0, noise_multiplier=1.0, bits=9, modulus_bits=32, min_contributors=4, dimension=300,
                clip_indicator=1.0, rotation_seed=rotation_seed(SEED).hex())
    base.update(kw)
    return DistributedDPConfig(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("rotated", [True, False])
def test_prepare_update_is_bit_identical_on_numpy_and_pure_python(rotated: bool) -> None:
    cfg = _cfg(rotation_seed=rotation_seed(SEED).hex() if rotated else "")
    x = np.random.default_rng(2).normal(size=300) * 0.3
    a, na = prepare_update(x, cfg, RandomStream(SEED), numpy_backend())
    b, nb = prepare_update([float(v) for v in x], cfg, RandomStream(SEED), pure_backend())
    assert na == nb and list(np.asarray(a)) == list(b)
    assert len(a) == cfg.field_length == (padded_length(301) if rotated else 301)


@pytest.mark.parametrize("z, bits", [(0.0, 9), (1.0, 8)])
def test_a_rotated_group_sum_in_the_chosen_modulus_decodes_to_the_plain_sum(z: float, bits: int) -> None:
    """Five clients, the modulus the group needs (not 32 bits): the decoded sum is the sum of the clipped updates
    plus the indicator, within the quantization (z = 0) or with noise of the prescribed variance (z = 1)."""
    probe = _cfg(noise_multiplier=z, bits=bits, modulus_bits=32)
    m = probe.required_modulus_bits(5)
    assert m < 20
    cfg = dataclasses.replace(probe, modulus_bits=m)
    be = numpy_backend()
    rng = np.random.default_rng(3)
    xs = [rng.normal(size=300) * 0.05 for _ in range(5)]
    acc = be.zeros_field(cfg.field_length, m)
    for i, x in enumerate(xs):
        acc = be.iadd_mod(acc, prepare_update(x, cfg, RandomStream(bytes([i]) * 32), be)[0], m)
    out = np.asarray(decode_sum(acc, cfg, be))
    assert out.shape == (301,)
    err = out[:300] - sum(xs)
    scale = cfg.fixed_point().scale()
    if z == 0:
        assert float(np.max(np.abs(err))) <= 5 * math.sqrt(padded_length(301)) / scale  # ≤ 5 grid steps in L2 …
        assert abs(out[300] - 2.5) < 0.01  # five unclipped members, κ(1 − ½) each
    else:
        expected = math.sqrt(5) * cfg.sigma_client() / scale
        assert 0.8 * expected < float(err.std()) < 1.2 * expected


@pytest.mark.parametrize("rotated", [True, False])
@pytest.mark.parametrize("z, bits, n", [(0.0, 8, 5), (1.0, 8, 5), (0.5, 12, 9), (2.0, 6, 3)])
def test_the_chosen_modulus_is_the_fewest_bits_that_hold_the_group_sum(rotated: bool, z: float, bits: int,
                                                                       n: int) -> None:
    cfg = _cfg(noise_multiplier=z, bits=bits, min_contributors=max(1, n - 1),
               rotation_seed=rotation_seed(SEED).hex() if rotated else "")
    m = cfg.required_modulus_bits(n)
    dataclasses.replace(cfg, modulus_bits=m).validate(n)
    if m > bits:
        with pytest.raises(ValueError, match="too small"):
            dataclasses.replace(cfg, modulus_bits=m - 1).validate(n)


def test_conditional_rounding_enforces_the_sensitivity_bound() -> None:
    """Every honest rounded vector is within the bound the accountant uses, which is never above the
    unconditional a + √L; a bound the rounding cannot meet is re-rounded, then refused – never sent."""
    be = numpy_backend()
    for rotated in (True, False):
        cfg = _cfg(bits=5, rotation_seed=rotation_seed(SEED).hex() if rotated else "")
        a = cfg.contribution_bound() * cfg.fixed_point().scale()
        assert cfg.sensitivity() <= a + math.sqrt(cfg.field_length)
        assert cfg.sensitivity() < 0.9 * (a + math.sqrt(cfg.field_length))  # 5 bits, L ≈ 300: below it
        stream = RandomStream(SEED)
        for k in range(30):
            x = np.random.default_rng(k).normal(size=cfg.field_length)
            x *= cfg.fixed_point().clip / np.max(np.abs(x))  # as large as the grid holds, then within the L2 bound
            x *= min(1.0, cfg.contribution_bound() / np.linalg.norm(x))
            q = np.asarray(round_within(x, cfg, stream, be), np.int64)
            assert int(q @ q) <= cfg.rounding_bound() ** 2

    class Tight(DistributedDPConfig):
        def rounding_bound(self) -> float:
            return self.contribution_bound() * self.fixed_point().scale() * 0.5

    tight = Tight(**dataclasses.asdict(_cfg(bits=5)))
    x = np.full(tight.field_length, tight.fixed_point().clip)  # every coordinate at the edge of the grid
    with pytest.raises(ValueError, match="sensitivity bound"):
        round_within(x, tight, RandomStream(SEED), be)


def test_a_byzantine_encoding_is_not_held_to_the_honest_bound() -> None:
    """The simulation's lying clients (an indicator value of their choosing) skip conditional rounding: the bound
    is what an honest client guarantees, not something the coordinator can rely on."""
    cfg = _cfg(noise_multiplier=0.0)
    x = np.zeros(300)
    vec, _ = prepare_update(x, cfg, RandomStream(SEED), numpy_backend(), indicator_value=-100.0)
    assert len(vec) == cfg.field_length


@pytest.mark.parametrize("kappa", [0.0, 1.0])
def test_honest_clients_are_held_to_the_bound_with_and_without_adaptive_clipping(kappa: float,
                                                                                 monkeypatch: pytest.MonkeyPatch
                                                                                 ) -> None:
    """prepare_update enforces the bound for every honest contribution – also with the clipped indicator, whose
    honest value the function fills in itself (it once took that for a lying value and skipped the bound). With the
    bound at the mean rounded norm, about half the vectors need a second rounding."""
    monkeypatch.setattr(DistributedDPConfig, "rounding_bound", lambda self: math.sqrt(
        (self.contribution_bound() * self.fixed_point().scale()) ** 2 + self.field_length / 4))
    cfg = _cfg(noise_multiplier=0.0, bits=16, clip_indicator=kappa, rotation_seed="")
    be = numpy_backend()
    for k in range(20):
        x = np.random.default_rng(k).normal(size=300)
        v, _ = prepare_update(x, cfg, RandomStream(bytes([k]) * 32), be)
        q = np.asarray(be.field_to_signed(v, cfg.modulus_bits), np.int64)
        assert int(q @ q) <= cfg.rounding_bound() ** 2
