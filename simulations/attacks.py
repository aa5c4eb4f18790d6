"""Byzantine attacks. Each is documented with its paper; spec strings reuse the pipeline grammar:
``"ipm(eps=10)"``, ``"alie"``, ``"minmax(perturbation=sign)"``.

A round is structured so that omniscient attacks can be expressed: every selected client's honest delta is
computed first, in one batch (attackers' own deltas too, trained on their own – possibly poisoned – data);
then :meth:`Attack.craft` turns the :class:`AttackContext` into the Byzantine clients' updates. An omniscient
attacker sees the honest clients' deltas of the round; a non-omniscient one only its colluders' own honest
deltas (the "partial knowledge" setting of Baruch et al. and of Shejwalkar & Houmansadr).

Data-poisoning attacks (label flipping, backdoor, model replacement, Sybil) change the attackers' local
datasets once, before the first round (:meth:`Attack.poison`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np


@dataclass
class AttackContext:
    round: int
    honest: np.ndarray  # (h, d): honest deltas this attacker may see (all honest selected clients if omniscient)
    own: np.ndarray  # (b, d): the selected attackers' own deltas (trained on their own, possibly poisoned, data)
    n: int  # clients selected this round
    f: int  # attackers among them (= len(own))
    honest_ids: list[int]  # population indices of the rows of ``honest``
    rng: np.random.Generator
    global_params: np.ndarray | None = None


@dataclass
class Attack:
    """Base class: ``craft`` returns the Byzantine updates (f, d); default = the attackers' own deltas."""

    params: dict[str, Any] = field(default_factory=dict)
    name: ClassVar[str] = "none"
    omniscient_default: ClassVar[bool] = False
    data_poisoning: ClassVar[bool] = False
    absent: ClassVar[bool] = False  # the Byzantine clients never submit (dropouts)
    allowed: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        bad = set(self.params) - set(self.allowed)
        if bad:
            raise ValueError(f"attack {self.name!r} takes no argument(s) {sorted(bad)} "
                             f"(allowed: {', '.join(self.allowed) or 'none'})")

    def p(self, key: str, default: Any) -> Any:
        return self.params.get(key, default)

    def poison(self, x: np.ndarray, y: np.ndarray, num_classes: int, image_shape: Any,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return x, y

    def craft(self, ctx: AttackContext) -> np.ndarray:
        return ctx.own.astype(np.float32, copy=True)

    def reference(self, ctx: AttackContext) -> np.ndarray:
        """The deltas the attacker estimates the honest distribution from."""
        ref = ctx.honest if len(ctx.honest) else ctx.own
        return ref.astype(np.float64)

    def __str__(self) -> str:
        inner = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.name}({inner})" if inner else self.name


class NoAttack(Attack):
    name = "none"


class SignFlip(Attack):
    """Sign flipping: each attacker sends −scale × its own honest delta.

    Damaskinos et al., "Asynchronous Byzantine Machine Learning (the case of SGD)", ICML'18; Li et al., "RSA:
    Byzantine-Robust Stochastic Aggregation Methods for Distributed Learning from Heterogeneous Datasets",
    AAAI'19 (sign-flipping attack); the "bit-flipping" attack of Karimireddy, He & Jaggi, ICLR'22 is scale = 1.
    """

    name = "sign_flip"
    allowed = ("scale",)

    def craft(self, ctx: AttackContext) -> np.ndarray:
        return (-float(self.p("scale", 1.0)) * ctx.own).astype(np.float32)


class GaussianNoise(Attack):
    """Gaussian noise: each attacker sends N(0, σ² I). Blanchard et al., "Machine Learning with Adversaries:
    Byzantine Tolerant Gradient Descent", NeurIPS'17 (Gaussian Byzantine workers)."""

    name = "gaussian"
    allowed = ("sigma",)

    def craft(self, ctx: AttackContext) -> np.ndarray:
        return ctx.rng.normal(0.0, float(self.p("sigma", 1.0)), ctx.own.shape).astype(np.float32)


def alie_z(n: int, f: int) -> float:
    """Baruch et al.'s z_max (NeurIPS'19, §3): s = ⌊n/2 + 1⌋ − f honest "supporters" are needed for a majority,
    z = Φ⁻¹((n − s)/n).

    Capped: when the attackers alone hold a majority (f ≥ ⌊n/2 + 1⌋) the formula gives s ≤ 0 and z = Φ⁻¹(≥ 1)
    = ∞ (a NaN update); the paper's derivation assumes f < n/2 and needs no supporters there. We cap s at 1 –
    z = Φ⁻¹((n − 1)/n), the largest z the formula yields for a non-empty honest majority, i.e. the attackers
    stay at the edge of the honest cloud (one honest update expected beyond them) – and use z = 0 (the mean)
    when n = 1."""
    from scipy.stats import norm

    s = max(1, int(np.floor(n / 2 + 1)) - f)
    p = (n - s) / n
    return float(norm.ppf(p)) if 0 < p < 1 else 0.0


class ALIE(Attack):
    """A Little Is Enough: every attacker sends μ − z·σ (coordinate-wise mean and standard deviation of the
    honest updates), z from n and f as in the paper unless given.

    Baruch, Baruch & Goldberg, "A Little Is Enough: Circumventing Defenses For Distributed Learning",
    NeurIPS'19. The paper's attackers estimate μ, σ from their own (honest) data; ``omniscient = true`` uses
    the honest clients' updates instead."""

    name = "alie"
    allowed = ("z",)

    def craft(self, ctx: AttackContext) -> np.ndarray:
        ref = self.reference(ctx)
        z = float(self.params["z"]) if "z" in self.params else alie_z(ctx.n, ctx.f)
        sigma = ref.std(axis=0) if len(ref) > 1 else np.zeros(ref.shape[1])
        v = ref.mean(axis=0) - z * sigma
        return np.repeat(v[None].astype(np.float32), ctx.f, axis=0)


class IPM(Attack):
    """Inner-product manipulation: every attacker sends −ε · (mean of the honest updates), so that the inner
    product of the aggregate with the true gradient becomes negative. With n − f honest clients, the plain
    mean turns against the honest direction once ε > (n − f)/f.

    Xie, Koyejo & Gupta, "Fall of Empires: Breaking Byzantine-tolerant SGD by Inner Product Manipulation",
    UAI'19 (omniscient)."""

    name = "ipm"
    omniscient_default = True
    allowed = ("eps",)

    def craft(self, ctx: AttackContext) -> np.ndarray:
        v = -float(self.p("eps", 0.1)) * self.reference(ctx).mean(axis=0)
        return np.repeat(v[None].astype(np.float32), ctx.f, axis=0)


def _perturbation(kind: str, ref: np.ndarray) -> np.ndarray:
    mu = ref.mean(axis=0)
    if kind == "std":  # inverse standard deviation
        return -(ref.std(axis=0) if len(ref) > 1 else np.zeros_like(mu))
    if kind == "unit":  # inverse unit vector
        nrm = np.linalg.norm(mu)
        return -mu / nrm if nrm > 0 else mu
    if kind == "sign":  # inverse sign
        return -np.sign(mu)
    raise ValueError(f"perturbation must be std, unit or sign, got {kind!r}")


def _optimize_gamma(ok: Any, gamma: float, tol: float = 1e-5, max_iter: int = 60) -> float:
    """The paper's Algorithm 1: the largest γ with ok(γ), by halving steps from γ_init."""
    step, best = gamma / 2, 0.0
    for _ in range(max_iter):
        if ok(gamma):
            best = max(best, gamma)
            gamma += step
        else:
            gamma -= step
        step /= 2
        if step < tol:
            break
    return best


class MinMax(Attack):
    """Min-Max: ∇m = μ + γ·∇p with the largest γ such that the malicious update's largest distance to any
    honest update is at most the largest distance between two honest updates (∇p = −std by default).

    Shejwalkar & Houmansadr, "Manipulating the Byzantine: Optimizing Model Poisoning Attacks and Defenses for
    Federated Learning", NDSS'21 (AGR-agnostic; full knowledge of the benign updates)."""

    name = "minmax"
    omniscient_default = True
    allowed = ("perturbation", "gamma_init")

    def _bound(self, ref: np.ndarray) -> tuple[Any, float]:
        from aggregation import gram_sq_distances

        d2 = np.asarray(gram_sq_distances(ref), np.float64)
        return d2, float(d2.max()) if len(ref) > 1 else 0.0

    def craft(self, ctx: AttackContext) -> np.ndarray:
        ref = self.reference(ctx)
        mu = ref.mean(axis=0)
        dp = _perturbation(str(self.p("perturbation", "std")), ref)
        d2, bound = self._bound(ref)
        sq = (ref * ref).sum(1)

        def dists(gamma: float) -> np.ndarray:
            m = mu + gamma * dp
            return np.maximum(sq - 2 * ref @ m + m @ m, 0.0)

        gamma = _optimize_gamma(lambda g: self._ok(dists(g), d2, bound), float(self.p("gamma_init", 10.0)))
        v = (mu + gamma * dp).astype(np.float32)
        return np.repeat(v[None], ctx.f, axis=0)

    def _ok(self, dist_sq: np.ndarray, d2: np.ndarray, bound: float) -> bool:
        return float(dist_sq.max()) <= bound


class MinSum(MinMax):
    """Min-Sum: as :class:`MinMax`, but the malicious update's *sum* of squared distances to the honest
    updates must be at most the largest such sum of an honest update. Shejwalkar & Houmansadr, NDSS'21."""

    name = "minsum"

    def _bound(self, ref: np.ndarray) -> tuple[Any, float]:
        from aggregation import gram_sq_distances

        d2 = np.asarray(gram_sq_distances(ref), np.float64)
        return d2, float(d2.sum(1).max())

    def _ok(self, dist_sq: np.ndarray, d2: np.ndarray, bound: float) -> bool:
        return float(dist_sq.sum()) <= bound


class Mimic(Attack):
    """Mimic: all attackers copy the update of one honest client, chosen (here in the first round it is seen)
    as the honest client whose update deviates most from the mean along the honest updates' top principal
    direction, and kept as long as it is selected. This over-represents one client's data in non-IID settings
    without ever looking like an outlier.

    Karimireddy, He & Jaggi, "Byzantine-Robust Learning on Heterogeneous Datasets via Bucketing", ICLR'22
    (omniscient)."""

    name = "mimic"
    omniscient_default = True
    allowed = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        self.target: int | None = None

    def craft(self, ctx: AttackContext) -> np.ndarray:
        if len(ctx.honest) == 0:
            return ctx.own.astype(np.float32, copy=True)
        if self.target not in ctx.honest_ids:
            x = ctx.honest.astype(np.float64) - ctx.honest.mean(axis=0)
            # top right-singular vector through the small (h × h) Gram matrix
            _, v = np.linalg.eigh(x @ x.T)
            proj = x @ (x.T @ v[:, -1])
            self.target = ctx.honest_ids[int(np.argmax(np.abs(proj)))]
        row = ctx.honest[ctx.honest_ids.index(self.target)]
        return np.repeat(row[None].astype(np.float32), ctx.f, axis=0)


class LabelFlip(Attack):
    """Label flipping: attackers train honestly on labels y → K − 1 − y.

    Biggio, Nelson & Laskov, "Poisoning Attacks against Support Vector Machines", ICML'12 (label flipping);
    in FL: Tolpegin et al., "Data Poisoning Attacks Against Federated Learning Systems", ESORICS'20; the
    y → 9 − y variant is the one of Karimireddy, He & Jaggi, ICLR'22."""

    name = "label_flip"
    data_poisoning = True

    def poison(self, x: np.ndarray, y: np.ndarray, num_classes: int, image_shape: Any,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return x, (num_classes - 1 - y).astype(y.dtype)


def add_trigger(x: np.ndarray, image_shape: Any, size: int = 2, value: float = 1.0) -> np.ndarray:
    """A square pixel trigger in the bottom-right corner (BadNets). Works on flat (n, H·W) rows or, without an
    image shape, sets the last ``size²`` features."""
    out = np.array(x, dtype=np.float32, copy=True)
    if image_shape is None:
        out[:, -size * size:] = value
        return out
    h, w = image_shape
    img = out.reshape(len(out), -1, h, w)
    img[:, :, h - size:, w - size:] = value
    return img.reshape(out.shape)


class Backdoor(Attack):
    """Backdoor with a pixel trigger: attackers add a 2×2 trigger to a fraction of their examples and label
    them ``target``; success is measured as the attack success rate (ASR: triggered test examples of other
    classes classified as ``target``).

    Gu, Dolan-Gavitt & Garg, "BadNets: Identifying Vulnerabilities in the Machine Learning Model Supply
    Chain", 2017 (pixel trigger); Bagdasaryan et al., "How To Backdoor Federated Learning", AISTATS'20."""

    name = "backdoor"
    data_poisoning = True
    allowed = ("target", "fraction", "size", "boost")

    def poison(self, x: np.ndarray, y: np.ndarray, num_classes: int, image_shape: Any,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        frac = float(self.p("fraction", 0.5))
        k = max(1, round(frac * len(y)))
        pick = rng.choice(len(y), size=k, replace=False)
        trig = add_trigger(x[pick], image_shape, int(self.p("size", 2)))
        y2 = np.full(k, int(self.p("target", 0)), dtype=y.dtype)
        return np.concatenate([x, trig]).astype(np.float32), np.concatenate([y, y2])

    def craft(self, ctx: AttackContext) -> np.ndarray:
        return (float(self.p("boost", 1.0)) * ctx.own).astype(np.float32)


class ModelReplacement(Backdoor):
    """Model replacement: the backdoored update scaled by γ = n / f so that it survives averaging
    (X̃ = γ(X − G) + G with γ = n/η, η = 1 for FedAvg, shared among the f colluders).

    Bagdasaryan et al., "How To Backdoor Federated Learning", AISTATS'20."""

    name = "model_replacement"

    def craft(self, ctx: AttackContext) -> np.ndarray:
        gamma = float(self.params["boost"]) if "boost" in self.params else ctx.n / max(ctx.f, 1)
        return (gamma * ctx.own).astype(np.float32)


class FreeRider(Attack):
    """Free-riding: no training, the client sends a zero update (``sigma > 0``: Gaussian noise of that scale
    to look like a real update, the "disguised" free rider).

    Lin, Du & Liu, "Free-riders in Federated Learning: Attacks and Defenses", 2019; Fraboni, Vidal & Lorenzi,
    "Free-rider Attacks on Model Aggregation in Federated Learning", AISTATS'21."""

    name = "free_ride"
    allowed = ("sigma",)

    def craft(self, ctx: AttackContext) -> np.ndarray:
        s = float(self.p("sigma", 0.0))
        if s == 0:
            return np.zeros_like(ctx.own, dtype=np.float32)
        return ctx.rng.normal(0.0, s, ctx.own.shape).astype(np.float32)


class Absent(Attack):
    """Not an attack: a reference. The Byzantine clients are selected but never submit an update (they drop out
    before secure aggregation, which the engine handles as dropouts), so the federation learns from the honest
    clients alone – what losing the attackers' data costs, the level a perfect defence can reach."""

    name = "absent"
    absent = True


class Sybil(LabelFlip):
    """Sybil identities: one adversary controls all Byzantine identities and sends the *same* poisoned update
    from each (the mean of its label-flipped deltas), amplifying its vote.

    Douceur, "The Sybil Attack", IPTPS'02; in FL: Fung, Yoon & Beschastnikh, "The Limitations of Federated
    Learning in Sybil Settings" (FoolsGold), RAID'20."""

    name = "sybil"

    def craft(self, ctx: AttackContext) -> np.ndarray:
        return np.repeat(ctx.own.mean(axis=0, keepdims=True).astype(np.float32), ctx.f, axis=0)


ATTACKS: dict[str, type[Attack]] = {cls.name: cls for cls in (
    NoAttack, SignFlip, GaussianNoise, ALIE, IPM, MinMax, MinSum, Mimic, LabelFlip, Backdoor, ModelReplacement,
    FreeRider, Sybil, Absent)}
_SPEC = re.compile(r"^\s*([a-z_]+)\s*(?:\((.*)\))?\s*$", re.S)


def _value(text: str) -> Any:
    t = text.strip()
    if t in ("true", "false"):
        return t == "true"
    for conv in (int, float):
        try:
            return conv(t)
        except ValueError:
            pass
    return t


def register_attack(cls: type[Attack], *, replace: bool = False) -> type[Attack]:
    """Add an :class:`Attack` subclass to :data:`ATTACKS` under ``cls.name`` (usable as a decorator); the plug-in
    API of ``fl-coordinator simulate --plugin package.module`` (docs/simulation.md). Registering the same class
    again is a no-op; another class under a taken name needs ``replace=True``."""
    if not (isinstance(cls, type) and issubclass(cls, Attack)):
        raise TypeError(f"register_attack needs an Attack subclass, got {cls!r}")
    name = cls.name
    if not (isinstance(name, str) and re.fullmatch(r"[a-z_]+", name)) or name == Attack.name:
        raise ValueError(f"attack class {cls.__name__} needs a class attribute name = 'lower_case' (not 'none'), "
                         f"got {name!r}")
    if name in ATTACKS and ATTACKS[name] is not cls and not replace:
        raise ValueError(f"attack {name!r} is already registered ({ATTACKS[name].__module__}."
                         f"{ATTACKS[name].__qualname__}); pass replace=True to override it")
    ATTACKS[name] = cls
    return cls


def make_attack(spec: str) -> Attack:
    """An attack from a spec string like ``"ipm(eps=10)"``."""
    m = _SPEC.match(spec or "")
    if not m:
        raise ValueError(f"cannot parse attack {spec!r} (expected name or name(key=value, …))")
    name, inner = m.group(1), m.group(2)
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r} (known: {', '.join(sorted(ATTACKS))})")
    params: dict[str, Any] = {}
    if inner and inner.strip():
        for part in inner.split(","):
            if "=" not in part:
                raise ValueError(f"attack {name!r}: argument {part.strip()!r} must be key=value")
            k, v = part.split("=", 1)
            params[k.strip()] = _value(v)
    return ATTACKS[name](params)
