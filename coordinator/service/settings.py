"""``fl-coordinator serve`` settings: a TOML file plus CLI flags (flags win), validated as a whole.

TOML layout (every key optional; see ``fl-coordinator serve --help`` and docs/protocol.md)::

    [server]      host, ws_port, grpc_port, data_dir, max_message_mb, audit_dir, log_level, exit_when_finished, exit_grace,
                  identity_expiry_days, port_file, operator_token_file (a file holding the token – never the token itself),
                  byzantine_fraction, max_grouping_risk, accept_grouping_risk (the grouping planner, below),
                  enrolment, enrolment_allowlist, enrolment_per_minute, enrolment_burst, probation,
                  hello_timeout, ready_timeout, stall_evidence, stall_ban, reveal_timeout (admission, docs/operations.md),
                  allowed_origins (browser origins allowed on /ws; default: the serving host's own; "*" = any)
    [limits]      admission control (coordinator.service.admission.LimitSettings, docs/operations.md):
                  pre_auth_max_frame_kb, max_buffered_mb, max_connections, max_connections_per_ip, exempt_loopback,
                  conn_msg_rate, conn_msg_burst, ip_msg_rate, ip_msg_burst, grpc_max_streams_per_connection,
                  close_timeout, log_line_max_chars, log_repeats_per_minute
    [federation]  rounds, clients_per_round, min_clients_per_round, group_size, aggregator, byzantine,
                  server_optimizer, server_lr, local_epochs, batch_size, lr, l2_clip, noise_multiplier,
                  quantization_bits, modulus_bits, rotation, epsilon, delta, train_timeout, phase_timeout, seed,
                  trust_decay, trust_outlier_threshold, trust_floor, ban_threshold, trust_min_evidence,
                  trust_negative_weight, trust_deviation_decay, trust_deviation_threshold,
                  trust_alignment_threshold, downlink
    [model]       spec = "mlp:64-32-10"  (or "cnn:digits", "cnn:digits:C1-C2", a JSON file path, or an inline table
                  {input_shape, layers, ...})
    [evaluation]  dataset = "digits" | "none" | "path/to/test.npz" (arrays x, y)
    [http]        header_timeout_s, idle_timeout_s, send_stall_timeout_s, content_security_policy
                  (:class:`HttpSettings`; the HTTP side of the WebSocket port, docs/operations.md)

The operator token (``Authorization: Bearer …`` for ``GET /status/operator``) comes from
``--operator-token-file``, else the environment variable ``FL_OPERATOR_TOKEN``, else ``[server]
operator_token_file``; without one the operator view is disabled.

The grouping planner (:func:`aggregation.planner.check`, docs/aggregation.md "Grouping planner") computes the
probability that a round has more corrupted groups than the aggregator tolerates, for clients drawn from a
population with Byzantine fraction ``byzantine_fraction`` (default: byzantine / clients_per_round). ``serve``
refuses a federation above ``max_grouping_risk`` (default 0.01 per round) with the probability and the largest
group size / smallest clients_per_round that hold; ``accept_grouping_risk`` turns the refusal into a warning.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coordinator.federation.config import FederationConfig
from coordinator.service.admission import LimitSettings
from coordinator.service.http_server import HttpLimits
from flcore.modelspec import CNN_DIGITS, ModelSpec, cnn, mlp

log = logging.getLogger("fl-coordinator.service.settings")
OPERATOR_TOKEN_ENV = "FL_OPERATOR_TOKEN"
MIN_OPERATOR_TOKEN_CHARS = 16


class SettingsError(ValueError):
    """An invalid option or an invalid combination of options."""


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    ws_port: int = 8765  # WebSocket (browsers) + HTTP (health, status, SDK files); 0 = any free port
    grpc_port: int = 8766  # gRPC (native clients); 0 = any free port
    data_dir: str = "fl-data"
    max_message_mb: float = 64.0
    audit_dir: str = ""
    identity_expiry_days: float = 30.0  # identities that never took part are forgotten this long after enrolling
    log_level: str = "info"
    exit_when_finished: bool = False
    # with exit_when_finished: how long a finished coordinator keeps answering so that last-round participants that
    # were disconnected at the end (a dropout reconnecting with back-off) are told to stop instead of retrying forever
    exit_grace: float = 10.0
    port_file: str = ""  # write {"ws_port", "grpc_port", "coordinator_key"} here once listening
    operator_token_file: str = ""  # the bearer token of /status/operator (see operator_token)
    # the grouping planner: assumed Byzantine fraction β (None: byzantine / clients_per_round), the largest accepted
    # per-round probability that more groups are corrupted than the aggregator tolerates, and the override
    byzantine_fraction: float | None = None
    population: int | None = None  # clients the rounds are drawn from, when known (exact hypergeometric risk)
    max_grouping_risk: float = 0.01
    accept_grouping_risk: bool = False
    # admission (coordinator/federation/admission.py, docs/operations.md): who may enrol, how fast, probation,
    # connection deadlines and stall penalties – the production defaults of serve
    enrolment: str = "open"
    enrolment_allowlist: str = ""
    enrolment_per_minute: float = 120.0
    enrolment_burst: int = 120
    probation: float = 10.0
    hello_timeout: float = 10.0
    ready_timeout: float = 300.0
    stall_evidence: float = 0.5
    stall_ban: int = 6
    reveal_timeout: float = 5.0
    # browser origins allowed to open /ws (exact "scheme://host[:port]"); () = the origin of the Host asked for;
    # "*" = any. Requests without Origin (native clients) are always allowed (issue 13 F18)
    allowed_origins: tuple[str, ...] = ()

    @property
    def max_message_bytes(self) -> int:
        return int(self.max_message_mb * 1024 * 1024)


@dataclass(frozen=True)
class HttpSettings:
    """``[http]``: the HTTP side of the WebSocket port (docs/operations.md,
    :mod:`coordinator.service.http_server`)."""

    # a request's header block must be complete this long after its first byte (a connection's first request:
    # after it was accepted), else the connection is closed (slowloris)
    header_timeout_s: float = 10.0
    # an HTTP keep-alive connection without a new request for this long is closed
    idle_timeout_s: float = 30.0
    # a response whose peer accepted no bytes for this long is aborted (no total deadline: slow links finish)
    send_stall_timeout_s: float = 60.0
    # the Content-Security-Policy header, verbatim; "" = the built-in policy (coordinator.service.security_headers)
    content_security_policy: str = ""

    def limits(self) -> HttpLimits:
        """The :class:`coordinator.service.http_server.HttpLimits` of these settings."""
        return HttpLimits(header_timeout_s=self.header_timeout_s, idle_timeout_s=self.idle_timeout_s,
                          send_stall_timeout_s=self.send_stall_timeout_s)


@dataclass(frozen=True)
class ServeSettings:
    server: ServerSettings
    federation: FederationConfig
    evaluation: str = "digits"
    model_text: str = "mlp:64-32-10"
    # the bearer token of GET /status/operator (from the token file or FL_OPERATOR_TOKEN); None = view disabled
    operator_token: str | None = field(default=None, repr=False)
    http: HttpSettings = field(default_factory=HttpSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)  # [limits]: admission control


SERVER_HELP = {
    "host": "address to listen on",
    "ws_port": "WebSocket + HTTP port (browsers, /health, /status); 0 picks a free port",
    "grpc_port": "gRPC port (native clients); 0 picks a free port",
    "data_dir": "directory for the SQLite store, model files and the coordinator's identity key",
    "max_message_mb": "largest accepted message (MiB); bigger frames are refused by the transport",
    "audit_dir": "if set, write every group's unmasked sum there as .mle (what the server learns)",
    "identity_expiry_days": "forget an identity (store row, trust entry) that never took part in a round this many "
                            "days after it enrolled, unless it is connected (it simply enrols again); 0 = never",
    "log_level": "debug, info, warning or error",
    "exit_when_finished": "exit once all rounds are done (or the privacy budget is spent)",
    "exit_grace": "with exit_when_finished: seconds to keep answering until every participant of the last round was "
                  "told to stop (one disconnected at the end reconnects and gets stop instead of retrying forever)",
    "port_file": "write the bound ports and the coordinator key as JSON to this file",
    "operator_token_file": "file holding the bearer token (at least 16 characters, surrounding whitespace stripped) "
                           "that GET /status/operator requires as 'Authorization: Bearer TOKEN' – the full status "
                           "with every client's id and trust; keep the file private (chmod 600). Alternatively set "
                           f"the environment variable {OPERATOR_TOKEN_ENV} (this flag wins over it, it wins over "
                           "the TOML). Without a token the operator view is disabled (404); /status is public and "
                           "shows aggregates only",
    "byzantine_fraction": "β: assumed fraction of Byzantine clients in the population rounds are drawn from; the "
                          "grouping planner computes from it the probability that a round has more corrupted groups "
                          "(a group with at least one Byzantine member) than the aggregator tolerates",
    "population": "number of clients the rounds are drawn from, when known: the planner then draws ⌈β·N⌉ "
                  "Byzantine clients exactly (hypergeometric) instead of each client independently",
    "max_grouping_risk": "largest accepted per-round probability that more groups are corrupted than the "
                         "aggregator tolerates; serve refuses a federation above it and suggests the largest "
                         "group_size / smallest clients_per_round that hold",
    "accept_grouping_risk": "run a federation above max_grouping_risk anyway, with a logged warning instead of "
                            "the refusal",
    "enrolment": "who may enrol a new client key: open (anyone, rate-limited), allowlist (only the keys in "
                 "enrolment_allowlist) or token (an enrolment token issued with fl-coordinator enrol-token)",
    "enrolment_allowlist": "file of allowed client public keys (one 64-hex Ed25519 key per line, # comments); "
                           "read at start",
    "enrolment_per_minute": "open enrolment: new identities accepted per minute (token bucket); 0 = unlimited",
    "enrolment_burst": "open enrolment: new identities accepted at once before the per-minute rate applies",
    "probation": "seconds after its enrolment before a new identity can be selected (0 = at once)",
    "hello_timeout": "seconds a connection has to authenticate (hello → auth) before it is closed; 0 = no limit",
    "ready_timeout": "seconds an authenticated connection may stay idle (not ready, not in a round) before it is "
                     "closed; 0 = no limit",
    "stall_evidence": "negative trust evidence (0-1) for a selected client that misses a reveal or secure-"
                      "aggregation deadline (a proven deviation is 1)",
    "stall_ban": "ban a client after this many consecutive stalled selections; 0 = never",
    "reveal_timeout": "seconds a selected client has to reveal its seed (a few bytes sent on receipt of the "
                      "selection, before training) before the attempt is abandoned without it; 0 = phase_timeout",
    "allowed_origins": "comma-separated browser origins (scheme://host[:port]) allowed to open /ws; others get 403. "
                       "Empty: only the origin of the host the browser asked for (the coordinator's own pages). "
                       "'*': any origin. Native clients send no Origin and are always allowed",
}
LIMITS_HELP = {
    "pre_auth_max_frame_kb": "largest WebSocket frame/message (KiB) before the client is authenticated (a hello is "
                             "< 1 KiB); larger ones close with 1009 at their header. gRPC: such a message ends the "
                             "stream with RESOURCE_EXHAUSTED",
    "max_buffered_mb": "incoming bytes (MiB) held in partial or queued frames over all WebSocket connections; the "
                       "connection that crosses it closes with 1009",
    "max_connections": "WebSocket/HTTP connections plus gRPC sessions; 0 = the open-file limit minus 128",
    "max_connections_per_ip": "connections (both transports) from one IP address",
    "exempt_loopback": "peers on 127.0.0.0/8 and ::1 skip the per-IP limits (local demos and benchmarks; behind a "
                       "reverse proxy on the same host every peer is the proxy – limit per IP there)",
    "conn_msg_rate": "messages (frames) per second on one connection (token bucket); over it: WebSocket close 1008, "
                     "gRPC RESOURCE_EXHAUSTED",
    "conn_msg_burst": "burst of the per-connection message rate",
    "ip_msg_rate": "messages per second from one IP address over all its connections",
    "ip_msg_burst": "burst of the per-IP message rate",
    "grpc_max_streams_per_connection": "concurrent gRPC streams (client sessions) on one HTTP/2 connection; more "
                                       "wait for a free one. Native clients in one process share a connection: keep "
                                       "it above the clients one process runs",
    "close_timeout": "seconds a peer gets to answer a WebSocket close (also on shutdown) before it is dropped",
    "log_line_max_chars": "longest log record; longer ones are cut and end with '… (N chars)'",
    "log_repeats_per_minute": "the same log message (numbers and ids folded) at most this often per minute, then "
                              "one line says it is suppressed and the next interval's first one counts the rest",
}
HTTP_HELP = {
    "header_timeout_s": "seconds a request's header block may take from its first byte (a connection's first "
                        "request: from the accept, before it is known to be a WebSocket); slower connections are "
                        "closed (slowloris)",
    "idle_timeout_s": "seconds an HTTP keep-alive connection may wait for its next request before it is closed",
    "send_stall_timeout_s": "seconds a response may wait for its peer to accept any byte before the connection is "
                            "aborted; there is no total deadline, so slow links get large files (Pyodide) at their "
                            "own pace",
    "content_security_policy": "the Content-Security-Policy header of every HTTP response, verbatim (empty: the "
                               "built-in policy; keep 'wasm-unsafe-eval', without it Pyodide cannot start)",
}
# [http] options of earlier versions: accepted with a warning and ignored (responses are streamed now)
HTTP_REMOVED = ("static_inflight_mb", "static_inflight_per_ip_mb", "static_wait_s")
SERVER_DEFAULT_TEXT = {"byzantine_fraction": "byzantine / clients_per_round", "population": "unknown",
                       "allowed_origins": "the serving host's own origin"}
FEDERATION_HELP = {
    "rounds": "number of rounds to train",
    "clients_per_round": "m: clients selected per round (trust-weighted)",
    "group_size": "s: secure-aggregation group size (1 = no cross-client secure aggregation; clients refuse "
                  "groups below their own minimum, 5 by default)",
    "selection": "client selection: trust (sampled ∝ max(trust, floor)) or uniform (every eligible client alike)",
    "threshold_rule": "SecAgg+ threshold floor per group: majority or two-thirds (active adversary); clients "
                      "check it against their own policy",
    "colluders": "colluding group members the threshold withstands (2t − n > colluders); the default policy "
                 "of clients requires 1",
    "aggregator": "robust pipeline across group means, e.g. median, krum, trmean, 'bucket(2)|cc(tau=1)'",
    "byzantine": "f: Byzantine clients to tolerate (checked against the robust rule and the group count)",
    "server_optimizer": "fedavg, fedavgm or fedadam",
    "server_lr": "server learning rate; 0 = the optimizer's default (fedavg 2, measured with the default defence; "
                 "fedavgm and fedadam 1)",
    "local_epochs": "local epochs per round",
    "batch_size": "local batch size",
    "lr": "local SGD learning rate",
    "l2_clip": "L2 clipping norm of each client update (the initial one with adaptive clipping)",
    "adaptive_clip_quantile": "γ: the clip follows this quantile of the clients' update norms, estimated from "
                              "clipped-indicator bits inside the secure-aggregation vector (Andrew et al. 2021); "
                              "0 = fixed l2_clip",
    "adaptive_clip_lr": "η: adaptive clipping's geometric step C ← C·exp(−η(b̃ − γ))",
    "adaptive_clip_weight": "κ/C: weight of the indicator coordinate; ε is unchanged (the noise covers it), the "
                            "update's noise grows by √(1 + (κ/C)²/4) and a group count's noise is z·√(C²/κ² + ¼)",
    "noise_multiplier": "z: distributed DP noise per released group sum (0 = off)",
    "quantization_bits": "B: bits per quantized coordinate (0 = the fewest at which quantization costs nothing "
                         "measurable: 5-8 with the rotation)",
    "modulus_bits": "m: secure-aggregation field is Z_{2^m}; 0 = per group, the fewest bits its sum needs "
                    "(quantization bits, group size, noise headroom), sent bit-packed",
    "rotation": "rotate each update by a public-seed randomized Hadamard transform before quantization "
                "(Kairouz et al. 2021), so that fewer bits per coordinate suffice",
    "epsilon": "privacy budget ε per client against this coordinator (a client whose next round would exceed "
               "it is not selected); inf = none",
    "delta": "privacy δ",
    "train_timeout": "seconds selected clients get to train and send their first message",
    "phase_timeout": "seconds per later secure-aggregation phase",
    "seed": "seed of the initial model and of client selection",
    "min_clients_per_round": "start a round with fewer clients (at least this many) once every connected client is "
                             "ready; 0 = clients_per_round",
    "trust_decay": "λ: weight old trust evidence keeps per observation (beta reputation, docs/trust.md)",
    "trust_outlier_threshold": "τ: outlier score counted as fully negative evidence",
    "trust_floor": "exploration floor of the selection weight (nobody starves)",
    "ban_threshold": "ban a client whose trust falls below this (after trust_min_evidence rounds); 0 = never",
    "trust_min_evidence": "observations before a client can be banned",
    "trust_negative_weight": "w⁻: weight of a fully negative observation (2: a ban after 5 of them instead of 12)",
    "trust_deviation_decay": "λ_d: memory of the co-deviation evidence against coordinated stealthy attacks",
    "trust_deviation_threshold": "co-deviation statistic from which a client gets negative evidence; 0 = off",
    "trust_alignment_threshold": "opposition statistic (updates against the aggregate, round after round) from which "
                                 "a client gets negative evidence; 0 = off",
    "downlink": "how the global model reaches clients: int8-delta (the model moves on the int8 grid of each round's "
                "step with server-side error feedback; a client holding an earlier model gets the signed deltas "
                "from it) or full (the whole signed model every round)",
}


def parse_model(value: Any) -> ModelSpec:
    """``mlp:64-32-10``, ``cnn:digits`` (:data:`flcore.modelspec.CNN_DIGITS`), ``cnn:digits:C1-C2[-C3]`` (the
    digits CNN with other channel counts: 1×8×8 input, one Conv2d-ReLU-MaxPool2d block per count, 10 classes),
    a path to a JSON model spec, or a spec mapping."""
    if isinstance(value, dict):
        return ModelSpec.from_dict(value)
    text = str(value)
    if text.startswith("mlp:"):
        try:
            sizes = [int(v) for v in text[4:].split("-")]
        except ValueError:
            raise SettingsError(f"model {text!r}: expected mlp:IN-HIDDEN-...-CLASSES") from None
        if len(sizes) < 2:
            raise SettingsError(f"model {text!r}: an MLP needs at least input and output sizes")
        return mlp(sizes)
    if text.startswith("cnn:"):
        return _parse_cnn(text)
    path = Path(text)
    if path.is_file():
        return ModelSpec.from_json(path.read_text())
    raise SettingsError(f"model {text!r}: not 'mlp:…', not 'cnn:digits[:C1-C2]' and not a JSON file")


def _parse_cnn(text: str) -> ModelSpec:
    """``cnn:digits`` or ``cnn:digits:C1-C2[-C3]`` (an 8×8 image allows at most 3 blocks of 2×2 pooling)."""
    name, sep, widths = text[4:].partition(":")
    if name != "digits":
        raise SettingsError(f"model {text!r}: expected cnn:digits or cnn:digits:C1-C2 (the only named CNN input "
                            "is digits, 1×8×8)")
    if not sep:
        return CNN_DIGITS
    try:
        channels = [int(v) for v in widths.split("-")]
    except ValueError:
        raise SettingsError(f"model {text!r}: expected cnn:digits:C1-C2 (channel counts)") from None
    if not 1 <= len(channels) <= 3:
        raise SettingsError(f"model {text!r}: 1 to 3 convolution blocks fit an 8×8 image, got {len(channels)}")
    return cnn((1, 8, 8), channels, 10)


def _coerce(name: str, value: Any, typ: Any) -> Any:
    if isinstance(value, bool) and typ not in (bool, "bool"):
        raise SettingsError(f"option {name}: {value!r} is a boolean, expected a {getattr(typ, '__name__', typ)}")
    try:
        if typ is bool or typ == "bool":
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if typ is int or typ == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if typ is float or typ == "float":
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise SettingsError(f"option {name}: {value!r} is not a valid {getattr(typ, '__name__', typ)}") from None


def _fields(cls: Any, skip: tuple[str, ...] = ()) -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(cls) if f.name not in skip]


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE.toml", help="TOML settings file (flags override it)")
    g = p.add_argument_group("server")
    for f in _fields(ServerSettings):
        flag = "--" + f.name.replace("_", "-")
        default = SERVER_DEFAULT_TEXT.get(f.name, f.default)
        if f.type in (bool, "bool"):
            g.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                           help=f"{SERVER_HELP[f.name]} (default: {default})")
        else:
            g.add_argument(flag, dest=f.name, default=None, help=f"{SERVER_HELP[f.name]} (default: {default})")
    g = p.add_argument_group("limits (admission control, docs/operations.md)")
    for f in _fields(LimitSettings):
        flag = "--" + f.name.replace("_", "-")
        if f.type in (bool, "bool"):
            g.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                           help=f"{LIMITS_HELP[f.name]} (default: {f.default})")
        else:
            g.add_argument(flag, dest=f.name, default=None, help=f"{LIMITS_HELP[f.name]} (default: {f.default})")
    g = p.add_argument_group("http (the HTTP side of the WebSocket port, docs/operations.md)")
    for f in _fields(HttpSettings):
        default = repr(f.default) if f.default == "" else f.default
        g.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=None,
                       help=f"{HTTP_HELP[f.name]} (default: {default})")
    g = p.add_argument_group("federation")
    g.add_argument("--model", dest="model", default=None,
                   help="model spec: mlp:64-32-10 (an MLP, layer sizes), cnn:digits (a CNN on digits as 1×8×8 "
                        "images: Conv2d(1,8,3,pad 1)-ReLU-MaxPool2d(2)-Conv2d(8,16,3,pad 1)-ReLU-MaxPool2d(2)-"
                        "Flatten-Linear(64,10)), cnn:digits:C1-C2 (other channel counts) or a JSON spec file "
                        "(default: mlp:64-32-10)")
    g.add_argument("--evaluation", dest="evaluation", default=None,
                   help="server-side evaluation data: digits, none, or FILE.npz with arrays x, y (default: digits)")
    for f in _fields(FederationConfig, ("model", "extra")):
        g.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=None,
                       help=f"{FEDERATION_HELP[f.name]} (default: {SERVE_DEFAULTS.get(f.name, f.default)})")


# `serve` is private by default (docs/threat-model.md): distributed DP noise with which a client with the default
# policy (groups of 5, two-thirds threshold, one colluder, noise ≥ 0.5, its own ε ≤ 10 at δ = 1e-6) takes part in
# 57 rounds, and the coordinator's own per-client budget (ε = 10 at δ = 1e-6) allows 76. The library's FederationConfig keeps z = 0
# for experiments; every one of these can be overridden by a flag or the TOML file.
SERVE_DEFAULTS: dict[str, Any] = {"noise_multiplier": 5.0, "epsilon": 10.0, "delta": 1e-6}


def load_settings(args: argparse.Namespace) -> ServeSettings:
    """Merge defaults ← TOML ← flags, then validate the federation as a whole."""
    doc: dict[str, Any] = {}
    if getattr(args, "config", None):
        path = Path(args.config)
        try:
            doc = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise SettingsError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"config file {path}: {exc}") from None
    unknown = set(doc) - {"server", "federation", "model", "evaluation", "http", "limits"}
    if unknown:
        raise SettingsError(f"unknown section(s) {sorted(unknown)} (known: server, federation, model, evaluation, "
                            "http, limits)")
    for section in ("server", "federation", "model", "evaluation", "http", "limits"):
        if section in doc and not isinstance(doc[section], dict):
            raise SettingsError(f"[{section}] must be a table (a [{section}] section), got {doc[section]!r}")
    for section, allowed in (("model", {"spec"}), ("evaluation", {"dataset"})):
        bad = set(doc.get(section, {})) - allowed
        if bad:
            raise SettingsError(f"[{section}]: unknown option(s) {sorted(bad)} (known: {', '.join(sorted(allowed))})")
    server_doc, fed_doc = dict(doc.get("server", {})), dict(doc.get("federation", {}))
    limits_doc = dict(doc.get("limits", {}))
    for section, d, cls, skip in (("server", server_doc, ServerSettings, ()), ("limits", limits_doc, LimitSettings, ()),
                                  ("federation", fed_doc, FederationConfig, ("model", "extra"))):
        names = {f.name for f in _fields(cls, skip)}
        bad = set(d) - names
        if bad:
            hint = (" – the token itself never goes in the TOML: use operator_token_file or "
                    f"${OPERATOR_TOKEN_ENV}") if section == "server" and "operator_token" in bad else ""
            raise SettingsError(f"[{section}]: unknown option(s) {sorted(bad)}{hint}")
    server_kw: dict[str, Any] = {}
    for f in _fields(ServerSettings):
        v = getattr(args, f.name, None)
        v = server_doc.get(f.name) if v is None else v
        if v is not None:
            if f.name == "allowed_origins":
                server_kw[f.name] = _origins(v)
                continue
            kind = {"byzantine_fraction": float, "population": int}.get(f.name, f.type)
            server_kw[f.name] = _coerce(f.name, v, kind)
    limits_kw: dict[str, Any] = {}
    for f in _fields(LimitSettings):
        v = getattr(args, f.name, None)
        v = limits_doc.get(f.name) if v is None else v
        if v is not None:
            limits_kw[f.name] = _coerce(f.name, v, f.type)
    limits = LimitSettings(**limits_kw)
    try:
        limits.validate()
    except ValueError as exc:
        raise SettingsError(f"[limits]: {exc}") from None
    fed_kw: dict[str, Any] = {}
    for f in _fields(FederationConfig, ("model", "extra")):
        v = getattr(args, f.name, None)
        v = fed_doc.get(f.name) if v is None else v
        v = SERVE_DEFAULTS.get(f.name) if v is None else v
        if v is not None:
            fed_kw[f.name] = _coerce(f.name, v, f.type)
    model_doc = doc.get("model", {})
    model_value = getattr(args, "model", None) or (model_doc.get("spec") if isinstance(model_doc, dict) else None)
    model_value = model_value or "mlp:64-32-10"
    evaluation = getattr(args, "evaluation", None) or doc.get("evaluation", {}).get("dataset", "digits")
    if evaluation not in ("digits", "none") and not (evaluation.endswith(".npz") and Path(evaluation).is_file()):
        raise SettingsError(f"evaluation {evaluation!r}: expected digits, none or an existing .npz file (x, y)")
    try:
        spec = parse_model(model_value)
    except ValueError as exc:
        raise SettingsError(f"model: {exc}") from None
    operator_token = _operator_token(args, server_kw)
    server = ServerSettings(**server_kw)
    if server.log_level not in ("debug", "info", "warning", "error"):
        raise SettingsError(f"log_level {server.log_level!r}: expected debug, info, warning or error")
    if not 0 < server.max_message_mb <= 2047:
        raise SettingsError("max_message_mb must be in (0, 2047]")
    for name in ("ws_port", "grpc_port"):
        if not 0 <= getattr(server, name) <= 65535:
            raise SettingsError(f"{name} must be a port number (0-65535)")
    if server.ws_port == server.grpc_port and server.ws_port != 0:
        raise SettingsError("ws_port and grpc_port must differ")
    if server.byzantine_fraction is not None and not 0.0 <= server.byzantine_fraction <= 1.0:
        raise SettingsError(f"byzantine_fraction must be in [0, 1], got {server.byzantine_fraction:g}")
    if server.population is not None and server.population < 1:
        raise SettingsError(f"population must be >= 1, got {server.population}")
    if not (math.isfinite(server.identity_expiry_days) and server.identity_expiry_days >= 0):
        raise SettingsError(f"identity_expiry_days must be >= 0 (0: never), got {server.identity_expiry_days:g}")
    if not 0.0 <= server.max_grouping_risk < 1.0:
        raise SettingsError(f"max_grouping_risk must be in [0, 1), got {server.max_grouping_risk:g}")
    admission_config(server)  # refuses a bad policy, value or allow-list file now, with one line
    fed = FederationConfig(model=spec, **fed_kw)
    try:
        fed.validate()
    except ValueError as exc:
        raise SettingsError(f"invalid federation: {exc}") from None
    if evaluation == "digits" and (spec.input_shape not in ((64,), (1, 8, 8)) or spec.num_classes != 10):
        raise SettingsError(f"evaluation on digits needs a model with input (64,) or (1, 8, 8) and 10 classes, "
                            f"got input {spec.input_shape} and {spec.num_classes} classes")
    check_grouping_risk(fed, server)
    http_doc = dict(doc.get("http", {}))
    for f in _fields(HttpSettings):
        v = getattr(args, f.name, None)
        if v is not None:
            http_doc[f.name] = v
    http = parse_http(http_doc)
    text = model_value if isinstance(model_value, str) else json.dumps(model_value)
    return ServeSettings(server, fed, evaluation, text, operator_token, http, limits)


def parse_http(d: dict[str, Any]) -> HttpSettings:
    """The ``[http]`` table (with any flags merged in) → :class:`HttpSettings`; unknown keys, wrong types and
    out-of-range values are refused; the options of the removed in-flight budget are ignored with a warning."""
    d = dict(d)
    for name in HTTP_REMOVED:
        if name in d:
            del d[name]
            log.warning("[http] %s is no longer used and is ignored: responses are streamed with bounded buffers "
                        "(send_stall_timeout_s drops peers that stop reading)", name)
    names = {f.name: f.type for f in _fields(HttpSettings)}
    bad = set(d) - set(names)
    if bad:
        raise SettingsError(f"[http]: unknown option(s) {sorted(bad)} (known: {', '.join(sorted(names))})")
    kw = {k: _coerce(k, v, names[k]) for k, v in d.items()}
    if "content_security_policy" in kw and not isinstance(d["content_security_policy"], str):
        raise SettingsError("option content_security_policy: expected a string")
    http = HttpSettings(**kw)
    for name, top in (("header_timeout_s", 600.0), ("idle_timeout_s", 3600.0), ("send_stall_timeout_s", 3600.0)):
        v = getattr(http, name)
        if not (math.isfinite(v) and 0 < v <= top):
            raise SettingsError(f"[http] {name} must be in (0, {top:g}] seconds, got {v:g}")
    if http.content_security_policy:
        from coordinator.service.security_headers import check_policy

        try:
            http = dataclasses.replace(http, content_security_policy=check_policy(http.content_security_policy))
        except ValueError as exc:
            raise SettingsError(f"[http] content_security_policy: {exc}") from None
    return http


def admission_config(server: ServerSettings) -> Any:
    """The engine's :class:`coordinator.federation.admission.AdmissionConfig` from the ``[server]`` admission
    settings (reads the allow-list file); :class:`SettingsError` if invalid."""
    from coordinator.federation.admission import AdmissionConfig, parse_allowlist

    keys: frozenset[bytes] = frozenset()
    if server.enrolment == "allowlist":
        if not server.enrolment_allowlist:
            raise SettingsError("enrolment = allowlist needs enrolment_allowlist (a file of client public keys)")
        try:
            keys = parse_allowlist(Path(server.enrolment_allowlist).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:  # unreadable, not UTF-8 (a ValueError) or not a list of keys
            raise SettingsError(f"enrolment_allowlist {server.enrolment_allowlist}: {exc}") from None
        if not keys:
            log.warning("enrolment allow-list %s is empty: no client can join", server.enrolment_allowlist)
    elif server.enrolment_allowlist:
        raise SettingsError(f"enrolment_allowlist is only used with enrolment = allowlist (enrolment is "
                            f"{server.enrolment!r})")
    # every other AdmissionConfig field is a [server] setting of the same name
    cfg = AdmissionConfig(allowlist=keys, **{f.name: getattr(server, f.name) for f in dataclasses.fields(AdmissionConfig)
                                             if f.name != "allowlist"})
    try:
        cfg.validate()
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    return cfg


def _origins(value: Any) -> tuple[str, ...]:
    """``allowed_origins``: a TOML list or a comma-separated flag → ``("*",)`` or exact ``scheme://host[:port]``."""
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    out = tuple(str(v).strip().rstrip("/") for v in items if str(v).strip())
    for o in out:
        if o != "*" and (not o.startswith(("http://", "https://")) or "/" in o.split("://", 1)[1]):
            raise SettingsError(f"allowed_origins: {o!r} is not '*' or scheme://host[:port] (http or https)")
    return out


def check_grouping_risk(fed: FederationConfig, server: ServerSettings) -> Any:
    """The grouping planner's verdict on a valid federation (:func:`aggregation.planner.check`): raises
    :class:`SettingsError` with the probability and what would hold when the per-round risk exceeds
    ``server.max_grouping_risk``, unless ``server.accept_grouping_risk`` (then a warning is logged). With an assumed
    Byzantine fraction above 0 the rule's own warnings (e.g. Krum and identical updates) are logged too. Returns
    the :class:`aggregation.planner.PlannerReport`."""
    from aggregation import planner

    try:
        report = planner.check(fed, server.byzantine_fraction, server.max_grouping_risk, population=server.population)
    except ValueError as exc:
        raise SettingsError(f"grouping planner: {exc}") from None
    if report.byzantine_fraction > 0:
        for warning in report.warnings:
            log.warning("aggregator %r: %s", fed.aggregator, warning)
    if report.ok:
        if report.byzantine_fraction > 0:
            log.info("%s", report.message())
        return report
    if server.accept_grouping_risk:
        log.warning("running with the grouping risk accepted (accept_grouping_risk): %s", report.message())
        return report
    raise SettingsError(f"{report.message()} To run it anyway pass --accept-grouping-risk ([server] "
                        "accept_grouping_risk = true); --byzantine-fraction sets the assumed fraction, "
                        "--max-grouping-risk the bound (docs/aggregation.md, 'Grouping planner').")


def check_operator_token(token: str, source: str) -> str:
    """The token with surrounding whitespace stripped; refused (without echoing it) if too short or if it holds
    characters an ``Authorization`` header cannot carry."""
    token = token.strip()
    if len(token) < MIN_OPERATOR_TOKEN_CHARS:
        raise SettingsError(f"operator token from {source}: {len(token)} characters, at least "
                            f"{MIN_OPERATOR_TOKEN_CHARS} needed (e.g. python -c 'import secrets; "
                            f"print(secrets.token_urlsafe(32))')")
    if not all("!" <= c <= "~" for c in token):
        raise SettingsError(f"operator token from {source}: only visible ASCII characters (no spaces) can be sent "
                            "in an Authorization header")
    return token


def read_operator_token(path: str) -> str:
    """The token in the file ``path``; a file that group or others may read gets a warning."""
    p = Path(path)
    try:
        mode = p.stat().st_mode
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SettingsError(f"operator token file {path} does not exist") from None
    except UnicodeDecodeError:
        raise SettingsError(f"operator token file {path}: not UTF-8 text") from None
    except OSError as exc:
        raise SettingsError(f"operator token file {path}: {exc.strerror or type(exc).__name__}") from None
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning("operator token file %s is readable by group/others (mode %03o); chmod 600 it",
                    path, stat.S_IMODE(mode))
    return check_operator_token(text, f"file {path}")


def _operator_token(args: argparse.Namespace, server_kw: dict[str, Any]) -> str | None:
    """--operator-token-file, else $FL_OPERATOR_TOKEN, else [server] operator_token_file (TOML ← env ← flag);
    ``server_kw["operator_token_file"]`` is cleared when the environment variable wins over the TOML's file."""
    flag = getattr(args, "operator_token_file", None)
    if flag:
        return read_operator_token(str(flag))
    env = os.environ.get(OPERATOR_TOKEN_ENV, "")
    if env:
        if server_kw.pop("operator_token_file", ""):
            log.warning("operator token from %s; [server] operator_token_file is not used", OPERATOR_TOKEN_ENV)
        return check_operator_token(env, f"the environment variable {OPERATOR_TOKEN_ENV}")
    path = server_kw.get("operator_token_file", "")
    return read_operator_token(path) if path else None


def federation_to_dict(cfg: FederationConfig) -> dict[str, Any]:
    d = {f.name: getattr(cfg, f.name) for f in _fields(FederationConfig, ("model", "extra"))}
    d["model"] = cfg.model.to_dict()
    return {k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in d.items()}


__all__ = ["HTTP_REMOVED", "OPERATOR_TOKEN_ENV", "HttpSettings", "ServeSettings", "ServerSettings", "SettingsError", "add_serve_arguments",
           "admission_config", "check_grouping_risk", "check_operator_token", "federation_to_dict", "load_settings",
           "parse_http", "parse_model",
           "read_operator_token"]
