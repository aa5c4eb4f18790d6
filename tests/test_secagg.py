"""SecAgg+: bit-exact group sums under dropouts at every phase, tampering/forgery/replay, thresholds,
determinism of the public graph and partition, and numpy ≡ pure-Python backends."""

from __future__ import annotations

import numpy as np
import pytest

from flcrypto import default_crypto
from privacy.backends import numpy_backend, pure_backend
from privacy.secagg import (
    GroupConfig,
    ProtocolError,
    ReplayError,
    SecAggClient,
    SecAggServer,
    SecAggSignatureError,
    ThresholdError,
    neighbour_graph,
    partition,
)
from privacy.secagg.messages import Message

C = default_crypto()
PHASES = ["advertise", "shares", "masked", "consistency", "unmask"]


def make_group(n: int, d: int, m: int, backend, seed: int = 0, degree=None, threshold=None, rnd: int = 7):
    ids = [f"client-{i:02d}" for i in range(n)]
    seeds = {i: C.blake2b(i.encode(), key=bytes([seed]) * 32) for i in ids}
    pks = {i: C.ed25519_public_key(s) for i, s in seeds.items()}
    cfg = GroupConfig(rnd, 3, tuple(ids), pks, d, m, C.blake2b(b"round-seed", key=bytes([seed]) * 32),
                      degree=degree, threshold=threshold)
    rng = np.random.default_rng(seed)
    xs = {i: rng.integers(0, 1 << m, d, dtype=np.uint64) for i in ids}
    clients = {i: SecAggClient(cfg, i, seeds[i], backend.ints_to_field(xs[i].tolist(), m), backend) for i in ids}
    return cfg, seeds, xs, clients, SecAggServer(cfg, backend)


def run(cfg, clients, server, drops: dict[str, str]) -> None:
    """Drive one group; client u stops answering from phase drops[u] on (the server's deadline passes)."""
    for u, c in clients.items():
        if drops.get(u) != "advertise":
            server.receive(c.start())
    while server.phase != "done":
        out = server.close_phase()
        for u, msg in out.items():
            if u in drops and PHASES.index(server.phase) >= PHASES.index(drops[u]):
                continue
            for reply in clients[u].handle(msg):
                server.receive(reply)


def expected_sum(xs, survivors, m):
    total = np.zeros_like(next(iter(xs.values())))
    for u in survivors:
        total = total + xs[u]
    return total % (1 << m)


@pytest.mark.parametrize("backend", [numpy_backend(), pure_backend()], ids=["numpy", "pure"])
@pytest.mark.parametrize("m", [16, 32, 20])
def test_bit_exact_sum_without_dropouts(backend, m) -> None:
    cfg, _, xs, clients, server = make_group(6, 300, m, backend)
    run(cfg, clients, server, {})
    res = server.result
    assert res.survivors == cfg.members
    np.testing.assert_array_equal(np.asarray(res.sum, dtype=np.uint64), expected_sum(xs, cfg.members, m))


@pytest.mark.parametrize("trial", range(12))
def test_bit_exact_sum_under_random_dropouts_at_every_phase(trial) -> None:
    rng = np.random.default_rng(1000 + trial)
    n = int(rng.integers(5, 13))
    backend = numpy_backend() if trial % 3 else pure_backend()
    cfg, _, xs, clients, server = make_group(n, 128, 16 if trial % 2 else 32, backend, seed=trial)
    # drop up to n - t clients at random phases (what the threshold allows in the worst case)
    max_drop = max(0, min(n - cfg.t, (cfg.k + 1) - cfg.t))
    k = int(rng.integers(0, max_drop + 1))
    victims = rng.choice(cfg.members, size=k, replace=False)
    drops = {str(v): str(rng.choice(PHASES)) for v in victims}
    run(cfg, clients, server, drops)
    res = server.result
    assert res is not None, drops
    survivors = [u for u in cfg.members if drops.get(u) not in ("advertise", "shares", "masked")]
    assert list(res.survivors) == survivors
    np.testing.assert_array_equal(np.asarray(res.sum, dtype=np.uint64), expected_sum(xs, survivors, cfg.modulus_bits))


def test_secagg_plus_with_a_sparse_graph_and_dropouts() -> None:
    cfg, _, xs, clients, server = make_group(20, 64, 32, numpy_backend(), seed=3)
    assert cfg.k < 19  # a true SecAgg+ graph, not the complete one
    drops = {"client-03": "masked", "client-11": "unmask", "client-17": "shares"}
    run(cfg, clients, server, drops)
    survivors = [u for u in cfg.members if u not in ("client-03", "client-17")]
    np.testing.assert_array_equal(server.result.sum, expected_sum(xs, survivors, 32))


def test_below_threshold_fails_clearly_and_releases_nothing() -> None:
    cfg, _, _xs, clients, server = make_group(5, 32, 16, numpy_backend(), threshold=4)
    drops = {"client-00": "masked", "client-01": "masked"}
    with pytest.raises(ThresholdError, match="masked inputs arrived; threshold 4"):
        run(cfg, clients, server, drops)
    assert server.result is None and server.phase == "failed"
    # clients refuse to unmask a survivor set below the threshold even if the server asked
    cfg2, _, _, clients2, server2 = make_group(3, 8, 16, numpy_backend(), threshold=3)
    for c in clients2.values():
        server2.receive(c.start())
    for _ in range(2):
        for u, msg in server2.close_phase().items():
            for r in clients2[u].handle(msg):
                server2.receive(r)
    forged = Message("survivors", cfg2.round, cfg2.group, "server", "client-00", {"u3": b"client-00\nclient-01"})
    with pytest.raises(ThresholdError, match="refusing to unmask"):
        clients2["client-00"].handle(forged.to_bytes())


def _advance_to(phase: str, cfg, clients, server) -> dict[str, bytes]:
    for c in clients.values():
        server.receive(c.start())
    while server.phase != phase:
        out = server.close_phase()
        for u, msg in out.items():
            for r in clients[u].handle(msg):
                server.receive(r)
    return {}


def test_tampered_forged_replayed_and_misrouted_messages_are_rejected() -> None:
    cfg, seeds, _, clients, server = make_group(4, 16, 16, numpy_backend())
    msg = clients["client-00"].start()
    tampered = bytearray(msg)
    tampered[-70] ^= 1  # inside the c_pk / s_pk items
    with pytest.raises((SecAggSignatureError, ProtocolError)):
        server.receive(bytes(tampered))
    # forged: signed with someone else's identity key
    m = Message.from_bytes(msg)
    forged = Message(m.phase, m.round, m.group, m.sender, m.recipient, m.items).sign(C, seeds["client-01"])
    with pytest.raises(SecAggSignatureError):
        server.receive(forged.to_bytes())
    server.receive(msg)
    with pytest.raises(ReplayError):
        server.receive(msg)  # replayed
    other_round = Message(m.phase, m.round + 1, m.group, m.sender, m.recipient, m.items).sign(C, seeds["client-00"])
    with pytest.raises(ProtocolError, match="round"):
        server.receive(other_round.to_bytes())
    outsider = Message(m.phase, m.round, m.group, "mallory", m.recipient, m.items).sign(C, bytes(32))
    with pytest.raises(ProtocolError, match="not a member"):
        server.receive(outsider.to_bytes())
    with pytest.raises(ProtocolError):
        server.receive(b"garbage")
    # a message of the wrong phase
    early = Message("masked", m.round, m.group, "client-01", m.recipient, {"y": b""}).sign(C, seeds["client-01"])
    with pytest.raises(ProtocolError, match="while the group is in advertise"):
        server.receive(early.to_bytes())
    # the server state is unaffected: the protocol still completes with the honest messages
    for u in ("client-01", "client-02", "client-03"):
        server.receive(clients[u].start())
    while server.phase != "done":
        for u, out in server.close_phase().items():
            for r in clients[u].handle(out):
                server.receive(r)
    assert server.result.survivors == cfg.members


def test_clients_reject_forged_advertisements_and_tampered_shares() -> None:
    cfg, seeds, _, clients, server = make_group(4, 16, 16, numpy_backend())
    for c in clients.values():
        server.receive(c.start())
    out = server.close_phase()
    keys = Message.from_bytes(out["client-00"])
    victim = next(iter(keys.items))
    adv = Message.from_bytes(keys.items[victim])
    evil = Message(adv.phase, adv.round, adv.group, adv.sender, adv.recipient,
                   {"c_pk": C.x25519_public_key(bytes(range(32))), "s_pk": adv.items["s_pk"]}).sign(C, bytes(32))
    bad = Message("keys", keys.round, keys.group, keys.sender, keys.recipient, {**keys.items, victim: evil.to_bytes()})
    with pytest.raises(SecAggSignatureError):
        clients["client-00"].handle(bad.to_bytes())
    # tampered ciphertext in shares_in
    for u, msg in out.items():
        if u != "client-00":
            for r in clients[u].handle(msg):
                server.receive(r)
    c0 = SecAggClient(cfg, "client-00", seeds["client-00"], numpy_backend().zeros_field(16, 16), numpy_backend())
    # a fresh client can't decrypt shares encrypted to the original one's keys
    c0.start()
    c0.handle(out["client-00"])
    server.receive(clients["client-00"].handle(out["client-00"])[0])
    shares_in = server.close_phase()["client-00"]
    with pytest.raises(ProtocolError, match="does not authenticate"):
        c0.handle(shares_in)


def test_graph_and_partition_are_deterministic_from_the_public_seed() -> None:
    members = [f"c{i}" for i in range(30)]
    g1 = neighbour_graph(members, 10, b"s" * 32)
    assert g1 == neighbour_graph(list(reversed(members)), 10, b"s" * 32)
    assert g1 != neighbour_graph(members, 10, b"t" * 32)
    assert all(len(v) == 10 for v in g1.values())
    assert all(u in g1[v] for u in members for v in g1[u])  # symmetric
    p1 = partition(members, 3, b"p" * 32)
    assert p1 == partition(sorted(members, reverse=True), 3, b"p" * 32)
    assert p1 != partition(members, 3, b"q" * 32)
    assert sorted(x for g in p1 for x in g) == sorted(members) and all(len(g) == 3 for g in p1)
    uneven = partition(members[:17], 5, b"p" * 32)
    assert [len(g) for g in uneven] == [6, 6, 5] and sum(map(len, uneven)) == 17
    with pytest.raises(ValueError):
        partition(["a", "a"], 2, b"p" * 32)


def test_backends_are_identical() -> None:
    rng = np.random.default_rng(5)
    nb, pb = numpy_backend(), pure_backend()
    for m in (8, 16, 17, 32):
        raw = C.prg(b"k" * 32, 1000 * (2 if m <= 16 else 4))
        a, b = nb.field_from_bytes(raw, 1000, m), pb.field_from_bytes(raw, 1000, m)
        assert a.tolist() == list(b)
        y = rng.integers(0, 1 << m, 1000, dtype=np.uint64)
        fy_n, fy_p = nb.ints_to_field(y, m), pb.ints_to_field(y.tolist(), m)
        assert nb.add_mod(a, fy_n, m).tolist() == list(pb.add_mod(b, fy_p, m))
        assert nb.sub_mod(a, fy_n, m).tolist() == list(pb.sub_mod(b, fy_p, m))
        q = rng.integers(-(1 << (m - 1)) + 1, 1 << (m - 1), 1000)
        assert nb.field_to_signed(nb.ints_to_field(q, m), m).tolist() == q.tolist()
        assert pb.field_to_signed(pb.ints_to_field(q.tolist(), m), m) == q.tolist()
