"""SecAgg+: bit-exact group sums under dropouts at every phase, tampering/forgery/replay, thresholds, wrong shares,
the server never obtaining both secrets of a client, determinism of the public graph and partition, and
numpy ≡ pure-Python backends."""

from __future__ import annotations

import itertools

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
    default_degree,
    neighbour_graph,
    partition,
    shamir,
)
from privacy.secagg.client import decode_survivors, encode_survivors
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


def run(cfg, clients, server, drops: dict[str, str], tamper=None) -> None:
    """Drive one group; client u stops answering from phase drops[u] on (the server's deadline passes).
    ``tamper(u, reply) -> reply`` may rewrite what a client sends."""
    for u, c in clients.items():
        if drops.get(u) != "advertise":
            server.receive(c.start())
    while server.phase != "done":
        out = server.close_phase()
        for u, msg in out.items():
            if u in drops and PHASES.index(server.phase) >= PHASES.index(drops[u]):
                continue
            for reply in clients[u].handle(msg):
                server.receive(tamper(u, reply) if tamper else reply)


def expected_sum(xs, survivors, m):
    """The reference: the plain sum of the survivors' inputs mod 2^m (Python ints, no masking involved)."""
    d = len(next(iter(xs.values())))
    return [sum(int(xs[u][j]) for u in survivors) % (1 << m) for j in range(d)]


def as_list(v) -> list[int]:
    return [int(x) for x in v]


@pytest.mark.parametrize("backend", [numpy_backend(), pure_backend()], ids=["numpy", "pure"])
@pytest.mark.parametrize("m", [16, 32, 20])
def test_bit_exact_sum_without_dropouts(backend, m) -> None:
    cfg, _, xs, clients, server = make_group(6, 300, m, backend)
    run(cfg, clients, server, {})
    res = server.result
    assert res.survivors == cfg.members and res.dropped == () and res.faulty == ()
    assert as_list(res.sum) == expected_sum(xs, cfg.members, m)
    assert all(c.phase == "done" for c in clients.values())


@pytest.mark.parametrize("trial", range(14))
def test_bit_exact_sum_under_random_dropouts_at_every_phase(trial) -> None:
    rng = np.random.default_rng(1000 + trial)
    n = int(rng.integers(3, 19))
    backend = numpy_backend() if trial % 3 else pure_backend()
    cfg, _, xs, clients, server = make_group(n, 64, 16 if trial % 2 else 32, backend, seed=trial)
    # drop as many clients as the threshold allows in the worst case, at random phases
    max_drop = max(0, min(n - cfg.t, (cfg.k + 1) - cfg.t))
    victims = rng.choice(cfg.members, size=int(rng.integers(0, max_drop + 1)), replace=False)
    drops = {str(v): str(rng.choice(PHASES)) for v in victims}
    run(cfg, clients, server, drops)
    res = server.result
    survivors = [u for u in cfg.members if drops.get(u) not in ("advertise", "shares", "masked")]
    assert list(res.survivors) == survivors, drops
    assert as_list(res.sum) == expected_sum(xs, survivors, cfg.modulus_bits), drops


def test_every_dropout_pattern_of_a_small_group() -> None:
    """n = 5, k = 4, t = 3: every assignment of ≤ 2 dropouts to phases gives the exact sum."""
    nb = numpy_backend()
    for victims in itertools.chain([()], itertools.combinations(range(5), 1), itertools.combinations(range(5), 2)):
        for phases in itertools.product(PHASES[:3] + PHASES[4:], repeat=len(victims)):
            cfg, _, xs, clients, server = make_group(5, 8, 16, nb, seed=len(victims))
            drops = {f"client-{v:02d}": p for v, p in zip(victims, phases, strict=True)}
            run(cfg, clients, server, drops)
            survivors = [u for u in cfg.members if drops.get(u) not in ("advertise", "shares", "masked")]
            assert as_list(server.result.sum) == expected_sum(xs, survivors, 16), drops


def test_secagg_plus_with_a_sparse_graph_and_dropouts() -> None:
    cfg, _, xs, clients, server = make_group(30, 64, 32, numpy_backend(), seed=3, degree=default_degree(30))
    assert cfg.k == 10 and cfg.t == 6  # a true SecAgg+ graph (the library still runs it; clients refuse it)
    drops = {"client-03": "masked", "client-11": "unmask", "client-17": "shares", "client-21": "consistency"}
    seen: dict[str, int] = {}

    def spy(u, reply):
        m = Message.from_bytes(reply)
        if m.phase == "shares":
            seen[u] = len(m.items)
        return reply

    run(cfg, clients, server, drops, tamper=spy)
    assert max(seen.values()) <= cfg.k  # each client shares with its k neighbours only
    survivors = [u for u in cfg.members if u not in ("client-03", "client-17")]
    assert as_list(server.result.sum) == expected_sum(xs, survivors, 32)


def test_below_threshold_fails_clearly_and_releases_nothing() -> None:
    cfg, _, _xs, clients, server = make_group(5, 32, 16, numpy_backend(), threshold=4)
    drops = {"client-00": "masked", "client-01": "masked"}
    with pytest.raises(ThresholdError, match="only 3 masked inputs arrived; threshold 4"):
        run(cfg, clients, server, drops)
    assert server.result is None and server.phase == "failed"
    assert all(c.phase != "done" for c in clients.values())  # nobody revealed a share
    assert set(server.failure_messages) == {"client-02", "client-03", "client-04"}
    with pytest.raises(ThresholdError, match="server reports failure"):
        clients["client-02"].handle(server.failure_messages["client-02"])
    assert clients["client-02"].phase == "failed"
    # too few answers in the unmasking phase: no sum
    cfg, _, _xs, clients, server = make_group(5, 32, 16, numpy_backend())
    with pytest.raises(ThresholdError, match=r"only 2 shares of the self-mask seed of 'client-0\d'; threshold 3"):
        run(cfg, clients, server, {"client-00": "unmask", "client-01": "unmask", "client-02": "unmask"})
    assert server.result is None
    # clients refuse to unmask a survivor set below the threshold even if the server asks
    cfg2, _, _, clients2, server2 = make_group(3, 8, 16, numpy_backend(), threshold=3)
    for c in clients2.values():
        server2.receive(c.start())
    for _ in range(2):
        for u, msg in server2.close_phase().items():
            for r in clients2[u].handle(msg):
                server2.receive(r)
    forged = Message("survivors", cfg2.round, cfg2.group, "server", "client-00",
                     {"u3": encode_survivors(("client-00", "client-01"))})
    with pytest.raises(ThresholdError, match="refusing to unmask"):
        clients2["client-00"].handle(forged.to_bytes())


def _advance_to(phase: str, clients, server) -> dict[str, bytes]:
    """Run honestly until the server is in ``phase``; returns the last messages it sent."""
    for c in clients.values():
        server.receive(c.start())
    out: dict[str, bytes] = {}
    while server.phase != phase:
        out = server.close_phase()
        if server.phase == phase:
            break
        for u, msg in out.items():
            for r in clients[u].handle(msg):
                server.receive(r)
    return out


def test_tampered_forged_replayed_and_misrouted_messages_are_rejected() -> None:
    cfg, seeds, _, clients, server = make_group(4, 16, 16, numpy_backend())
    msg = clients["client-00"].start()
    tampered = bytearray(msg)
    tampered[-70] ^= 1  # inside the items
    with pytest.raises(SecAggSignatureError):
        server.receive(bytes(tampered))
    m = Message.from_bytes(msg)
    forged = Message(m.phase, m.round, m.group, m.sender, m.recipient, m.items).sign(C, seeds["client-01"])
    with pytest.raises(SecAggSignatureError):
        server.receive(forged.to_bytes())
    unsigned = Message(m.phase, m.round, m.group, m.sender, m.recipient, m.items)
    with pytest.raises(SecAggSignatureError, match="not signed"):
        server.receive(unsigned.to_bytes())
    server.receive(msg)
    with pytest.raises(ReplayError):
        server.receive(msg)
    other_round = Message(m.phase, m.round + 1, m.group, m.sender, m.recipient, m.items).sign(C, seeds["client-00"])
    with pytest.raises(ProtocolError, match="round"):
        server.receive(other_round.to_bytes())
    other_group = Message(m.phase, m.round, m.group + 1, m.sender, m.recipient, m.items).sign(C, seeds["client-00"])
    with pytest.raises(ProtocolError, match="group"):
        server.receive(other_group.to_bytes())
    outsider = Message(m.phase, m.round, m.group, "mallory", m.recipient, m.items).sign(C, bytes(32))
    with pytest.raises(ProtocolError, match="not a member"):
        server.receive(outsider.to_bytes())
    with pytest.raises(ProtocolError):
        server.receive(b"garbage")
    early = Message("masked", m.round, m.group, "client-01", m.recipient, {"y": b""}).sign(C, seeds["client-01"])
    with pytest.raises(ProtocolError, match="while the group is in advertise"):
        server.receive(early.to_bytes())
    bad_adv = Message("advertise", m.round, m.group, "client-01", m.recipient,
                      {"c_pk": bytes(32), "s_pk": bytes(32)}).sign(C, seeds["client-01"])
    with pytest.raises(ProtocolError, match="advertise: needs exactly"):
        server.receive(bad_adv.to_bytes())
    # the server state is unaffected: the protocol still completes with the honest messages
    for u in ("client-01", "client-02", "client-03"):
        server.receive(clients[u].start())
    while server.phase != "done":
        for u, out in server.close_phase().items():
            for r in clients[u].handle(out):
                server.receive(r)
    assert server.result.survivors == cfg.members


def test_server_rejects_malformed_shares_masked_consistency_and_unmask_messages() -> None:
    cfg, seeds, _, clients, server = make_group(5, 16, 16, numpy_backend())
    out = _advance_to("shares", clients, server)
    reply = Message.from_bytes(clients["client-00"].handle(out["client-00"])[0])
    partial = dict(reply.items)
    partial.pop(sorted(partial)[0])  # withholding shares from one live neighbour would corrupt the sum
    with pytest.raises(ProtocolError, match="exactly its live neighbours"):
        server.receive(Message("shares", cfg.round, cfg.group, "client-00", "server", partial)
                       .sign(C, seeds["client-00"]).to_bytes())
    server.receive(reply.to_bytes())
    for u in cfg.members[1:]:
        server.receive(clients[u].handle(out[u])[0])
    out = server.close_phase()
    y = Message.from_bytes(clients["client-00"].handle(out["client-00"])[0])
    for items, err in [({"y": b"not an mle file"}, "not a valid .mle"), ({"y": y.items["y"], "z": b""}, "exactly one")]:
        with pytest.raises(ProtocolError, match=err):
            server.receive(Message("masked", cfg.round, cfg.group, "client-00", "server", items)
                           .sign(C, seeds["client-00"]).to_bytes())
    from privacy.secagg.wire import encode_masked

    short = encode_masked(np.zeros(15, np.uint16), 16, cfg.round, cfg.group)
    with pytest.raises(ProtocolError, match="expected 16 elements"):
        server.receive(Message("masked", cfg.round, cfg.group, "client-00", "server", {"y": short})
                       .sign(C, seeds["client-00"]).to_bytes())
    server.receive(y.to_bytes())
    for u in cfg.members[1:]:
        server.receive(clients[u].handle(out[u])[0])
    out = server.close_phase()
    lie = encode_survivors(cfg.members[:4])
    with pytest.raises(ProtocolError, match="different survivor set"):
        server.receive(Message("consistency", cfg.round, cfg.group, "client-00", "server", {"u3": lie})
                       .sign(C, seeds["client-00"]).to_bytes())
    for u in cfg.members:
        server.receive(clients[u].handle(out[u])[0])
    out = server.close_phase()
    honest = Message.from_bytes(clients["client-00"].handle(out["client-00"])[0])
    both = dict(honest.items)
    both["s:client-01"] = both["b:client-01"]  # asking the server for both secrets of client-01
    with pytest.raises(ProtocolError, match="not a share the server may ask for"):
        server.receive(Message("unmask", cfg.round, cfg.group, "client-00", "server", both)
                       .sign(C, seeds["client-00"]).to_bytes())
    server.receive(honest.to_bytes())


def test_clients_reject_forged_advertisements_and_tampered_shares() -> None:
    _cfg, _seeds, _, clients, server = make_group(4, 16, 16, numpy_backend())
    for c in clients.values():
        server.receive(c.start())
    out = server.close_phase()
    keys = Message.from_bytes(out["client-00"])
    victim = next(iter(keys.items))
    adv = Message.from_bytes(keys.items[victim])
    evil = Message(adv.phase, adv.round, adv.group, adv.sender, adv.recipient,
                   {**adv.items, "c_pk": C.x25519_public_key(bytes(range(32)))}).sign(C, bytes(32))
    bad = Message("keys", keys.round, keys.group, keys.sender, keys.recipient, {**keys.items, victim: evil.to_bytes()})
    with pytest.raises(SecAggSignatureError):
        clients["client-00"].handle(bad.to_bytes())
    assert clients["client-00"].phase == "advertised"  # state unchanged: the genuine message still works
    wrong_round = Message("keys", keys.round + 1, keys.group, keys.sender, keys.recipient, keys.items)
    with pytest.raises(ProtocolError, match="round"):
        clients["client-00"].handle(wrong_round.to_bytes())
    for u, msg in out.items():
        for r in clients[u].handle(msg):
            server.receive(r)
    shares_in = Message.from_bytes(server.close_phase()["client-00"])
    sender = next(iter(shares_in.items))
    flipped = bytearray(shares_in.items[sender])
    flipped[30] ^= 1
    bad = Message("shares_in", shares_in.round, shares_in.group, "server", "client-00",
                  {**shares_in.items, sender: bytes(flipped)})
    with pytest.raises(ProtocolError, match="does not authenticate"):
        clients["client-00"].handle(bad.to_bytes())
    # a replayed phase message is refused once the client has moved on
    clients["client-00"].handle(shares_in.to_bytes())
    with pytest.raises(ProtocolError, match="is in phase 'masked'"):
        clients["client-00"].handle(shares_in.to_bytes())


def test_client_reveals_one_secret_per_peer_and_only_after_consistent_signatures() -> None:
    """A curious server that shows different survivor sets cannot collect both shares of one client."""
    cfg, seeds, _xs, clients, server = make_group(5, 16, 16, numpy_backend())
    out = _advance_to("unmask", clients, server)
    req = Message.from_bytes(out["client-00"])
    # a signature on another survivor set is refused, and so is a request with too few signatures
    other = Message("consistency", cfg.round, cfg.group, "client-01", "server",
                    {"u3": encode_survivors(cfg.members[1:])}).sign(C, seeds["client-01"])
    with pytest.raises(ProtocolError, match="signed a different survivor set"):
        clients["client-00"].handle(Message("unmask_request", cfg.round, cfg.group, "server", "client-00",
                                            {**req.items, "client-01": other.to_bytes()}).to_bytes())
    few = dict(list(req.items.items())[:2])
    with pytest.raises(ThresholdError, match="only 2 consistency signatures"):
        clients["client-00"].handle(Message("unmask_request", cfg.round, cfg.group, "server", "client-00",
                                            few).to_bytes())
    assert clients["client-00"].phase == "failed"
    reply = Message.from_bytes(clients["client-01"].handle(out["client-01"])[0])
    owners = [k.split(":", 1)[1] for k in reply.items]
    assert len(owners) == len(set(owners))  # never a b-share and an s-share of the same client
    assert all(k.startswith("b:") for k in reply.items)  # everyone survived: only self-mask shares
    with pytest.raises(ProtocolError, match="is in phase 'done'"):
        clients["client-01"].handle(out["client-01"])  # a second request reveals nothing more


def test_wrong_share_is_detected_named_and_the_sum_stays_exact() -> None:
    cfg, seeds, xs, clients, server = make_group(7, 32, 32, numpy_backend(), seed=4)
    assert cfg.k + 1 - cfg.t >= 2

    def corrupt(u, reply):
        m = Message.from_bytes(reply)
        if u != "client-02" or m.phase != "unmask":
            return reply
        items = {}
        for key, raw in m.items.items():
            x, y = shamir.decode_share(raw)
            items[key] = shamir.encode_share((x, (y + 12345) % shamir.PRIME))
        return Message(m.phase, m.round, m.group, m.sender, m.recipient, items).sign(C, seeds[u]).to_bytes()

    run(cfg, clients, server, {"client-05": "masked"}, tamper=corrupt)
    res = server.result
    assert res.faulty == ("client-02",)
    survivors = [u for u in cfg.members if u != "client-05"]
    assert as_list(res.sum) == expected_sum(xs, survivors, 32)


def test_unmask_request_is_local_to_the_holders() -> None:
    cfg, _, _, clients, server = make_group(24, 8, 16, numpy_backend(), seed=9)
    out = _advance_to("unmask", clients, server)
    for u, blob in out.items():
        req = Message.from_bytes(blob)
        assert set(req.items) == set(cfg.holders(u)) and len(req.items) == cfg.k + 1


def test_identity_and_config_validation() -> None:
    cfg, seeds, _, _, _ = make_group(4, 8, 16, numpy_backend())
    with pytest.raises(ValueError, match="does not match its registered public key"):
        SecAggClient(cfg, "client-00", seeds["client-01"], numpy_backend().zeros_field(8, 16), numpy_backend())
    with pytest.raises(ValueError, match="not a member"):
        SecAggClient(cfg, "mallory", seeds["client-01"], numpy_backend().zeros_field(8, 16), numpy_backend())
    with pytest.raises(ValueError, match="expects 8"):
        SecAggClient(cfg, "client-00", seeds["client-00"], numpy_backend().zeros_field(9, 16), numpy_backend())
    with pytest.raises(ValueError, match="threshold"):
        GroupConfig(1, 0, cfg.members, cfg.identity_keys, 8, 16, b"s" * 32, threshold=5)
    with pytest.raises(ValueError, match="public_seed"):
        GroupConfig(1, 0, cfg.members, cfg.identity_keys, 8, 16, b"s" * 31)
    with pytest.raises(ValueError, match="member id 'server' is invalid"):
        GroupConfig(1, 0, ("server", "a"), {"server": bytes(32), "a": bytes(32)}, 8, 16, b"s" * 32)
    with pytest.raises(ValueError, match="u64"):
        GroupConfig(-1, 0, cfg.members, cfg.identity_keys, 8, 16, b"s" * 32)
    with pytest.raises(ValueError, match="32-byte"):
        GroupConfig(1, 0, cfg.members, {**cfg.identity_keys, "client-00": b"x"}, 8, 16, b"s" * 32)
    with pytest.raises(ValueError, match="modulus_bits"):
        GroupConfig(1, 0, cfg.members, cfg.identity_keys, 8, 33, b"s" * 32)
    assert decode_survivors(encode_survivors(("b", "a"))) == ("a", "b")
    with pytest.raises(ProtocolError, match="sorted"):
        decode_survivors(encode_survivors(("a",)) * 2)


def test_graph_and_partition_are_deterministic_from_the_public_seed() -> None:
    members = [f"c{i}" for i in range(30)]
    g1 = neighbour_graph(members, 10, b"s" * 32)
    assert g1 == neighbour_graph(list(reversed(members)), 10, b"s" * 32)
    assert g1 != neighbour_graph(members, 10, b"t" * 32)
    assert all(len(v) == 10 and u not in v for u, v in g1.items())  # k-regular, no self loops
    assert all(u in g1[v] for u in members for v in g1[u])  # symmetric
    reach, todo = {"c0"}, ["c0"]  # connected
    while todo:
        for v in g1[todo.pop()] - reach:
            reach.add(v)
            todo.append(v)
    assert reach == set(members)
    assert [default_degree(n) for n in (1, 2, 3, 5, 8, 9, 20, 100, 1000)] == [0, 1, 2, 4, 6, 8, 10, 14, 20]
    with pytest.raises(ValueError, match="even"):
        neighbour_graph(members, 5, b"s" * 32)
    p1 = partition(members, 3, b"p" * 32)
    assert p1 == partition(sorted(members, reverse=True), 3, b"p" * 32)
    assert p1 != partition(members, 3, b"q" * 32)
    assert sorted(x for g in p1 for x in g) == sorted(members) and all(len(g) == 3 for g in p1)
    uneven = partition(members[:17], 5, b"p" * 32)
    assert [len(g) for g in uneven] == [6, 6, 5] and sum(map(len, uneven)) == 17
    assert [sorted(g) for g in partition(members[:2], 5, b"p" * 32)] == [sorted(members[:2])]
    # every client lands in every position with roughly equal frequency over seeds (no server choice)
    firsts = [partition(members[:6], 2, bytes([i]) * 32)[0] for i in range(120)]
    counts = {u: sum(u in g for g in firsts) for u in members[:6]}
    assert all(20 <= c <= 60 for c in counts.values()), counts  # expected 40 each
    with pytest.raises(ValueError):
        partition(["a", "a"], 2, b"p" * 32)
    with pytest.raises(ValueError):
        partition(["a"], 0, b"p" * 32)


def test_backends_are_identical() -> None:
    rng = np.random.default_rng(5)
    nb, pb = numpy_backend(), pure_backend()
    for m in (8, 16, 17, 32):
        raw = C.prg(b"k" * 32, 1000 * (2 if m <= 16 else 4))
        a, b = nb.field_from_bytes(raw, 1000, m), pb.field_from_bytes(raw, 1000, m)
        assert a.tolist() == list(b) and max(b) < 1 << m
        y = rng.integers(0, 1 << m, 1000, dtype=np.uint64)
        fy_n, fy_p = nb.ints_to_field(y, m), pb.ints_to_field(y.tolist(), m)
        ref_add = [(int(p) + int(q)) % (1 << m) for p, q in zip(b, y, strict=True)]
        ref_sub = [(int(p) - int(q)) % (1 << m) for p, q in zip(b, y, strict=True)]
        assert nb.add_mod(a, fy_n, m).tolist() == list(pb.add_mod(b, fy_p, m)) == ref_add
        assert nb.sub_mod(a, fy_n, m).tolist() == list(pb.sub_mod(b, fy_p, m)) == ref_sub
        acc_n, acc_p = nb.add_mod(nb.zeros_field(1000, m), a, m), pb.add_mod(pb.zeros_field(1000, m), b, m)
        acc_n = nb.iadd_mod(acc_n, fy_n, m)
        assert acc_n.tolist() == list(pb.iadd_mod(acc_p, fy_p, m)) == ref_add
        assert nb.isub_mod(acc_n, fy_n, m).tolist() == a.tolist()
        q = rng.integers(-(1 << (m - 1)) + 1, 1 << (m - 1), 1000)
        assert nb.field_to_signed(nb.ints_to_field(q, m), m).tolist() == q.tolist()
        assert pb.field_to_signed(pb.ints_to_field(q.tolist(), m), m) == q.tolist()


@pytest.mark.parametrize("m", [1, 12, 16, 20, 31, 32])
def test_masked_inputs_travel_in_exactly_m_bits_unless_u16_or_u32_are_exact(m: int) -> None:
    """encode_masked: field_packed (ceil(d·m/8) bytes) when m is not 16 or 32, field (u16/u32) otherwise; numpy and
    pure inputs give the same bytes, and decode_masked reads either encoding into the same values on both
    backends."""
    import mle
    from privacy.secagg.wire import decode_masked, encode_masked

    d = 1001
    y = np.random.default_rng(m).integers(0, 1 << m, d, dtype=np.uint64).astype(np.uint16 if m <= 16 else np.uint32)
    blob = encode_masked(y, m, 7, 3)
    assert blob == encode_masked(pure_backend().ints_to_field(y.tolist(), m), m, 7, 3)
    e = mle.loads(blob).entry("masked")
    assert e.encoding_name == ("field" if m in (16, 32) else "field_packed")
    assert e.nbytes == ((d * m + 7) // 8 if m not in (16, 32) else d * m // 8)
    plain = mle.dumps({"masked": mle.FieldElements(y, modulus_bits=m)},
                      {"kind": "secagg-masked-input", "round": 7, "group": 3})
    for b in (blob, plain):
        bits, nv = decode_masked(b, "numpy", 7, 3)
        _, pv = decode_masked(b, "pure", 7, 3)
        assert bits == m and nv.dtype == y.dtype and nv.tolist() == pv.tolist() == y.tolist()
        assert pv.format == ("H" if m <= 16 else "I")
