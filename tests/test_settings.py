"""coordinator.service.settings: TOML + flags (flags win), unknown sections/options, bad types, invalid combinations,
the grouping planner's refusal (and its override), model spec parsing, the operator token (file, environment
variable, precedence, refusals), ``fl-coordinator serve --help`` and the exit status of an invalid ``serve``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from coordinator.federation.config import FederationConfig
from coordinator.service.settings import (
    FEDERATION_HELP,
    OPERATOR_TOKEN_ENV,
    SERVER_HELP,
    ServerSettings,
    SettingsError,
    add_serve_arguments,
    load_settings,
    parse_model,
)
from flcore.modelspec import CNN_DIGITS, Linear, ReLU, cnn, mlp

REPO = Path(__file__).resolve().parents[1]
FED_OPTIONS = [f.name for f in dataclasses.fields(FederationConfig) if f.name not in ("model", "extra")]
SERVER_OPTIONS = [f.name for f in dataclasses.fields(ServerSettings)]
TOKEN = "s3cret-operator-token-0123456789"


@pytest.fixture(autouse=True)
def _no_operator_token_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(OPERATOR_TOKEN_ENV, raising=False)


def token_file(tmp_path: Path, text: str = TOKEN + "\n", mode: int = 0o600, name: str = "token") -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(mode)
    return path


def allowlist_file(tmp_path: Path) -> Path:
    path = tmp_path / "allowed-keys.txt"
    path.write_text("# enrolment allow-list\n" + "ab" * 32 + "\n")
    return path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="serve")
    add_serve_arguments(p)
    return p


def settings(tmp_path: Path, toml: str | None = None, *flags: str):
    argv = list(flags)
    if toml is not None:
        path = tmp_path / "fl.toml"
        path.write_text(toml)
        argv = ["--config", str(path), *argv]
    return load_settings(_parser().parse_args(argv))


def test_defaults(tmp_path: Path) -> None:
    s = settings(tmp_path, None, "--evaluation", "none")
    assert s.server == ServerSettings()
    # private by default: noise a default client policy accepts, a per-client budget, δ below 1/N
    assert s.federation == FederationConfig(model=mlp([64, 32, 10]), noise_multiplier=5.0, epsilon=10.0, delta=1e-6)
    assert s.federation.group_size == 5 and s.federation.threshold() == 4
    assert s.model_text == "mlp:64-32-10" and s.evaluation == "none"
    assert s.server.max_message_bytes == 64 * 1024 * 1024


def test_toml_and_flags_merge_flags_win(tmp_path: Path) -> None:
    toml = """
[server]
host = "0.0.0.0"
ws_port = 9000
grpc_port = 9001
exit_when_finished = true
max_message_mb = 2.5
[federation]
rounds = 5
clients_per_round = 6
group_size = 3
aggregator = "trmean"
l2_clip = 0.5
epsilon = 8.0
noise_multiplier = 0.7
[evaluation]
dataset = "none"
"""
    s = settings(tmp_path, toml, "--rounds", "7", "--grpc-port", "9100", "--no-exit-when-finished",
                 "--epsilon", "inf", "--noise-multiplier", "0")
    assert s.server.host == "0.0.0.0" and s.server.ws_port == 9000 and s.server.grpc_port == 9100
    assert s.server.exit_when_finished is False  # the flag beats the file's true
    assert s.server.max_message_mb == 2.5 and s.server.max_message_bytes == int(2.5 * 1024 * 1024)
    f = s.federation
    assert (f.rounds, f.clients_per_round, f.group_size, f.aggregator, f.l2_clip) == (7, 6, 3, "trmean", 0.5)
    assert f.epsilon == math.inf and f.noise_multiplier == 0.0
    assert s.evaluation == "none"
    # an explicit flag equal to the default still wins over the file
    assert settings(tmp_path, "[federation]\nrounds = 5\n", "--rounds", "30", "--evaluation", "none"
                    ).federation.rounds == 30


def test_every_federation_and_server_option_is_settable_from_toml_and_flags(tmp_path: Path) -> None:
    values = {"rounds": 4, "clients_per_round": 6, "min_clients_per_round": 3, "group_size": 3,
              "aggregator": "mean", "byzantine": 0, "server_optimizer": "fedadam", "server_lr": 0.5,
              "local_epochs": 2, "batch_size": 8, "lr": 0.05, "l2_clip": 2.0, "noise_multiplier": 0.5,
              "quantization_bits": 14, "modulus_bits": 0, "rotation": True, "epsilon": 10.0, "delta": 1e-6, "train_timeout": 5.0,
              "phase_timeout": 4.0, "seed": 9, "trust_decay": 0.8, "trust_outlier_threshold": 3.0,
              "trust_floor": 0.1, "ban_threshold": 0.1, "trust_min_evidence": 3, "threshold_rule": "majority",
              "colluders": 0, "selection": "uniform", "adaptive_clip_quantile": 0.6, "adaptive_clip_lr": 0.3,
              "adaptive_clip_weight": 1.0, "trust_negative_weight": 1.5, "trust_deviation_decay": 0.95,
              "trust_deviation_threshold": 3.0, "trust_alignment_threshold": 1.5, "downlink": "full"}
    assert set(values) == set(FED_OPTIONS)  # a new option must be added here (and to the docs)
    toml = "[federation]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())
    s = settings(tmp_path, toml, "--evaluation", "none")
    assert {k: getattr(s.federation, k) for k in values} == values
    flags = [x for k, v in values.items() for x in ("--" + k.replace("_", "-"), str(v))]
    s = settings(tmp_path, None, "--evaluation", "none", *flags)
    assert {k: getattr(s.federation, k) for k in values} == values
    # the grouping planner's options: β = 0.1 with the default 15 clients in 3 groups of 5 (median) is a per-round
    # risk of 0.37 > 0.05, accepted here (so it is a warning, not a refusal)
    server = {"host": "::1", "ws_port": 1234, "grpc_port": 1235, "data_dir": "d", "max_message_mb": 3.0,
              "audit_dir": "a", "log_level": "debug", "exit_when_finished": True, "exit_grace": 3.0,
              "port_file": "p.json",
              "operator_token_file": str(token_file(tmp_path)), "byzantine_fraction": 0.1,
              "max_grouping_risk": 0.05, "accept_grouping_risk": True, "population": 40,
              "enrolment": "allowlist", "enrolment_allowlist": str(allowlist_file(tmp_path)),
              "enrolment_per_minute": 30.0, "enrolment_burst": 7, "probation": 2.0, "hello_timeout": 4.0,
              "ready_timeout": 60.0, "stall_evidence": 0.25, "stall_ban": 4, "reveal_timeout": 2.0, "identity_expiry_days": 7.0,
              "allowed_origins": ("https://a.example", "http://b.example:8080")}
    assert set(server) == set(SERVER_OPTIONS)
    toml = "[server]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in server.items())
    assert dataclasses.asdict(settings(tmp_path, toml, "--evaluation", "none").server) == server
    booleans = ("exit_when_finished", "accept_grouping_risk")
    flags = [x for k, v in server.items() if k not in booleans
             for x in ("--" + k.replace("_", "-"), ",".join(v) if isinstance(v, tuple) else str(v))]
    assert dataclasses.asdict(settings(tmp_path, None, "--evaluation", "none", "--exit-when-finished",
                                       "--accept-grouping-risk", *flags).server) == server


@pytest.mark.parametrize(("toml", "needle"), [
    ("[servre]\nhost = 'x'\n", "unknown section(s) ['servre']"),
    ("[federation]\nrounds = 3\n[extra]\nx = 1\n", "unknown section(s) ['extra']"),
    ("rounds = 3\n", "unknown section(s) ['rounds']"),  # a top-level key is an unknown section too
    ("[server]\nport = 80\n", "[server]: unknown option(s) ['port']"),
    ("[server]\nmax_message_bytes = 80\n", "[server]: unknown option(s) ['max_message_bytes']"),
    ("[federation]\nround = 3\n", "[federation]: unknown option(s) ['round']"),
    ("[federation]\nmodel = 'mlp:64-10'\n", "[federation]: unknown option(s) ['model']"),
    ("[federation]\nextra = 1\n", "[federation]: unknown option(s) ['extra']"),
    ("[federation]\nmin_clients = 3\nnum_groups = 2\n", "unknown option(s) ['min_clients', 'num_groups']"),
])
def test_unknown_sections_and_options_are_rejected(tmp_path: Path, toml: str, needle: str) -> None:
    with pytest.raises(SettingsError) as exc:
        settings(tmp_path, toml)
    assert needle in str(exc.value)


@pytest.mark.parametrize("toml", ["[model]\nspecc = 'mlp:64-10'\n", "[evaluation]\ndatset = 'none'\n"])
def test_unknown_model_and_evaluation_keys_are_rejected(tmp_path: Path, toml: str) -> None:
    with pytest.raises(SettingsError):
        settings(tmp_path, toml)


@pytest.mark.parametrize("toml", ["model = 'mlp:10-3'\n", "evaluation = 'none'\n", "server = 1\n",
                                  "federation = 'x'\n"])
def test_model_and_evaluation_must_be_tables(tmp_path: Path, toml: str) -> None:
    with pytest.raises(SettingsError):
        settings(tmp_path, toml)


@pytest.mark.parametrize(("args", "needle"), [
    (("--rounds", "many"), "option rounds: 'many' is not a valid int"),
    (("--rounds", "2.5"), "option rounds"),
    (("--l2-clip", "big"), "option l2_clip"),
    (("--ws-port", "http"), "option ws_port"),
    (("--max-message-mb", "lots"), "option max_message_mb"),
])
def test_bad_flag_types(tmp_path: Path, args: tuple[str, ...], needle: str) -> None:
    with pytest.raises(SettingsError) as exc:
        settings(tmp_path, None, "--evaluation", "none", *args)
    assert needle in str(exc.value)


@pytest.mark.parametrize(("toml", "needle"), [
    ("[federation]\nrounds = 'three'\n", "option rounds"),
    ("[federation]\nrounds = 2.5\n", "option rounds"),
    ("[federation]\nlr = 'fast'\n", "option lr"),
    ("[federation]\nbatch_size = [32]\n", "option batch_size"),
    ("[server]\nexit_when_finished = 'maybe'\n", "option exit_when_finished"),
    ("[server]\ngrpc_port = {x = 1}\n", "option grpc_port"),
    ("[federation\nrounds = 1\n", "config file"),  # not TOML
])
def test_bad_toml_types(tmp_path: Path, toml: str, needle: str) -> None:
    with pytest.raises(SettingsError) as exc:
        settings(tmp_path, toml, "--evaluation", "none")
    assert needle in str(exc.value)


def test_integral_floats_and_bool_words_are_accepted(tmp_path: Path) -> None:
    s = settings(tmp_path, "[federation]\nrounds = 4.0\n[server]\nexit_when_finished = 'yes'\n", "--evaluation",
                 "none")
    assert s.federation.rounds == 4 and isinstance(s.federation.rounds, int) and s.server.exit_when_finished


@pytest.mark.parametrize("toml", ["[federation]\nrounds = true\n", "[federation]\nl2_clip = true\n"])
def test_booleans_are_not_numbers(tmp_path: Path, toml: str) -> None:
    with pytest.raises(SettingsError):
        settings(tmp_path, toml, "--evaluation", "none")


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(_parser().parse_args(["--config", str(tmp_path / "nope.toml")]))


@pytest.mark.parametrize(("args", "needle"), [
    # Krum needs n ≥ 2f + 3 group means: 9 clients in groups of 3 give 3 groups, f = 1 needs 5
    (("--aggregator", "krum", "--byzantine", "1", "--clients-per-round", "9", "--group-size", "3"),
     "aggregator 'krum' over 3 groups of 3 (9 clients) with f=1"),
    # the check also runs for the smaller rounds min_clients_per_round allows
    (("--aggregator", "krum", "--byzantine", "1", "--clients-per-round", "15", "--group-size", "3",
      "--min-clients-per-round", "6"), "over 2 groups of 3 (6 clients)"),
    (("--group-size", "5", "--clients-per-round", "3"), "group_size 5 > clients_per_round 3"),
    (("--min-clients-per-round", "16", "--clients-per-round", "15"), "min_clients_per_round must be in [0, "),
    (("--min-clients-per-round", "2", "--group-size", "3"), "min_clients_per_round 2 < group_size 3"),
    (("--noise-multiplier", "1.0", "--epsilon", "inf"), "no ε budget"),
    (("--delta", "1.5",), "delta"),
    (("--train-timeout", "0",), "timeouts"),
    (("--server-optimizer", "sgd9",), ""),
    (("--trust-decay", "1.5",), "decay"),
    (("--rounds", "0",), "must be >= 1"),
    (("--ws-port", "9000", "--grpc-port", "9000"), "ws_port and grpc_port must differ"),
    (("--ws-port", "70000",), "ws_port must be a port number"),
    (("--log-level", "verbose"), "log_level 'verbose'"),
    (("--max-message-mb", "0"), "max_message_mb must be in (0, 2047]"),
    (("--max-message-mb", "4096"), "max_message_mb must be in (0, 2047]"),
    (("--evaluation", "mnist"), "evaluation 'mnist'"),
])
def test_invalid_combinations(tmp_path: Path, args: tuple[str, ...], needle: str) -> None:
    argv = args if "--evaluation" in args else (*args, "--evaluation", "none")
    with pytest.raises(SettingsError) as exc:
        settings(tmp_path, None, *argv)
    assert needle in str(exc.value)


# ── the grouping planner (aggregation/planner.py) ───────────────────────────────────────────────────────
def test_grouping_risk_above_the_bound_is_refused_with_the_probability_and_what_holds(tmp_path: Path) -> None:
    """byzantine 1 of 15 per round → β = 1/15; 3 groups of 5, the median tolerates 1 corrupted group; a round has
    2 or more with probability 3p²(1−p) + p³, p = 1 − (14/15)⁵, = 0.2057 > 0.01."""
    with pytest.raises(SettingsError) as exc:
        settings(tmp_path, None, "--evaluation", "none", "--byzantine", "1")
    text = str(exc.value)
    assert text.startswith("grouping risk 0.2057 per round exceeds the bound 0.01")
    assert "β = 0.06667 (byzantine / clients_per_round)" in text
    assert "tolerates 1 corrupted group out of the 3 groups (3×5) of a 15-client round" in text
    assert "largest group size that holds at 15 clients per round is 2" in text
    assert "smallest clients_per_round that holds with groups of 5 is 145" in text
    assert "--accept-grouping-risk" in text and "[server] accept_grouping_risk = true" in text


def test_grouping_risk_explicit_fraction_and_bound(tmp_path: Path) -> None:
    # an explicit β wins over the derived one, in both directions
    assert settings(tmp_path, None, "--evaluation", "none", "--byzantine", "1", "--byzantine-fraction", "0"
                    ).server.byzantine_fraction == 0.0
    with pytest.raises(SettingsError, match=r"grouping risk 0\.7941 .* β = 0\.1, rule 'nnm\|cc"):
        settings(tmp_path, None, "--evaluation", "none", "--byzantine-fraction", "0.1")
    # a looser bound accepts the same federation
    s = settings(tmp_path, "[server]\nmax_grouping_risk = 0.25\n", "--evaluation", "none", "--byzantine", "1")
    assert s.server.max_grouping_risk == 0.25 and s.federation.byzantine == 1
    # smaller groups hold: 15 clients in 7 groups (median tolerates 3) at β = 1/15
    assert settings(tmp_path, None, "--evaluation", "none", "--byzantine", "1", "--group-size", "2",
                    "--colluders", "0", "--threshold-rule", "majority", "--aggregator", "median"
                    ).federation.group_size == 2


def test_grouping_risk_accepted_is_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="fl-coordinator.service.settings"):
        s = settings(tmp_path, "[server]\naccept_grouping_risk = true\n", "--evaluation", "none", "--byzantine", "1")
    assert s.server.accept_grouping_risk and s.federation.byzantine == 1
    (rec,) = caplog.records
    assert rec.levelno == logging.WARNING and "grouping risk 0.2057 per round exceeds" in rec.getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fl-coordinator.service.settings"):
        settings(tmp_path, None, "--evaluation", "none", "--byzantine", "1", "--accept-grouping-risk")
    assert "accept_grouping_risk" in caplog.text


def test_krum_is_warned_about_when_byzantine_clients_are_assumed(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    args = ("--evaluation", "none", "--aggregator", "krum", "--clients-per-round", "35", "--byzantine", "1")
    with caplog.at_level(logging.WARNING, logger="fl-coordinator.service.settings"):
        s = settings(tmp_path, None, *args, "--byzantine-fraction", "0.001")  # 7 groups: risk 5e-4
    assert s.federation.aggregator == "krum"
    assert "identical updates" in caplog.text and "free-riders" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fl-coordinator.service.settings"):
        settings(tmp_path, None, *args, "--byzantine-fraction", "0")
    assert caplog.records == []  # no attackers assumed: nothing to warn about


@pytest.mark.parametrize(("args", "needle"), [
    (("--byzantine-fraction", "1.5"), "byzantine_fraction must be in [0, 1], got 1.5"),
    (("--byzantine-fraction", "-0.1"), "byzantine_fraction must be in [0, 1]"),
    (("--byzantine-fraction", "some"), "option byzantine_fraction: 'some' is not a valid float"),
    (("--max-grouping-risk", "1"), "max_grouping_risk must be in [0, 1), got 1"),
    (("--max-grouping-risk", "-1"), "max_grouping_risk must be in [0, 1)"),
])
def test_bad_grouping_planner_options(tmp_path: Path, args: tuple[str, ...], needle: str) -> None:
    with pytest.raises(SettingsError) as exc:
        settings(tmp_path, None, "--evaluation", "none", *args)
    assert needle in str(exc.value)


def test_serve_refuses_a_risky_grouping_with_exit_2(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "coordinator.service.cli", "serve", "--byzantine", "1",
         "--data-dir", str(tmp_path / "data"), "--evaluation", "none"],
        cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "fl-coordinator serve: error: grouping risk 0.2057 per round exceeds the bound 0.01" in proc.stderr
    assert proc.stdout == "" and not (tmp_path / "data").exists()


def test_ports_zero_may_be_equal(tmp_path: Path) -> None:
    s = settings(tmp_path, None, "--ws-port", "0", "--grpc-port", "0", "--evaluation", "none")
    assert s.server.ws_port == s.server.grpc_port == 0


@pytest.mark.parametrize("model", ["mlp:10-5-3", "mlp:64-32-9"])
def test_digits_evaluation_needs_a_digits_model(tmp_path: Path, model: str) -> None:
    with pytest.raises(SettingsError, match="evaluation on digits needs a model"):
        settings(tmp_path, None, "--model", model)
    assert settings(tmp_path, None, "--model", model, "--evaluation", "none").federation.model.input_shape[0] in (
        10, 64)


# ── the operator token (GET /status/operator) ───────────────────────────────────────────────────────────
def test_no_operator_token_by_default(tmp_path: Path) -> None:
    s = settings(tmp_path, None, "--evaluation", "none")
    assert s.operator_token is None and s.server.operator_token_file == ""


def test_operator_token_from_a_file_is_stripped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = token_file(tmp_path, f"  \n{TOKEN}\r\n\n")
    with caplog.at_level(logging.DEBUG):
        s = settings(tmp_path, None, "--evaluation", "none", "--operator-token-file", str(path))
    assert s.operator_token == TOKEN and s.server.operator_token_file == str(path)
    assert caplog.records == []  # mode 0600: nothing to warn about
    assert TOKEN not in repr(s) and TOKEN not in str(s)  # never printed with the settings


def test_operator_token_file_from_toml(tmp_path: Path) -> None:
    path = token_file(tmp_path)
    s = settings(tmp_path, f"[server]\noperator_token_file = {json.dumps(str(path))}\n", "--evaluation", "none")
    assert s.operator_token == TOKEN and s.server.operator_token_file == str(path)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_operator_token_file_readable_by_others_is_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                                mode: int) -> None:
    path = token_file(tmp_path, mode=mode)
    with caplog.at_level(logging.WARNING, logger="fl-coordinator.service.settings"):
        s = settings(tmp_path, None, "--evaluation", "none", "--operator-token-file", str(path))
    assert s.operator_token == TOKEN  # accepted, with a warning
    assert any("readable by group/others" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert TOKEN not in caplog.text


@pytest.mark.parametrize(("text", "needle"), [
    ("short-token", "11 characters, at least 16 needed"),
    ("", "0 characters, at least 16 needed"),
    ("   \n\t\n", "0 characters, at least 16 needed"),
    ("  0123456789abcde  \n", "15 characters, at least 16 needed"),  # stripped before counting
    ("0123456789 abcdef0123", "only visible ASCII"),
    ("0123456789abcdef\n0123", "only visible ASCII"),
    ("ä0123456789abcdef0123", "only visible ASCII"),
])
def test_bad_operator_tokens_are_refused(tmp_path: Path, text: str, needle: str) -> None:
    path = token_file(tmp_path, text)
    with pytest.raises(SettingsError) as exc:
        settings(tmp_path, None, "--evaluation", "none", "--operator-token-file", str(path))
    assert needle in str(exc.value) and str(path) in str(exc.value)
    if text.strip():
        assert text.strip() not in str(exc.value)  # the (bad) token is never echoed


def test_missing_or_unreadable_operator_token_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"operator token file .*nope does not exist"):
        settings(tmp_path, None, "--evaluation", "none", "--operator-token-file", str(tmp_path / "nope"))
    with pytest.raises(SettingsError, match=r"operator token file .*nope does not exist"):
        settings(tmp_path, f"[server]\noperator_token_file = {json.dumps(str(tmp_path / 'nope'))}\n",
                 "--evaluation", "none")
    with pytest.raises(SettingsError, match="operator token file"):
        settings(tmp_path, None, "--evaluation", "none", "--operator-token-file", str(tmp_path))  # a directory
    (tmp_path / "bin").write_bytes(b"\xff\xfe" * 20)
    with pytest.raises(SettingsError, match="not UTF-8"):
        settings(tmp_path, None, "--evaluation", "none", "--operator-token-file", str(tmp_path / "bin"))


def test_operator_token_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(OPERATOR_TOKEN_ENV, f" {TOKEN}\n")
    s = settings(tmp_path, None, "--evaluation", "none")
    assert s.operator_token == TOKEN and s.server.operator_token_file == ""
    monkeypatch.setenv(OPERATOR_TOKEN_ENV, "too-short")
    with pytest.raises(SettingsError, match=f"environment variable {OPERATOR_TOKEN_ENV}: 9 characters") as exc:
        settings(tmp_path, None, "--evaluation", "none")
    assert "too-short" not in str(exc.value)
    monkeypatch.setenv(OPERATOR_TOKEN_ENV, "")  # set but empty: no token
    assert settings(tmp_path, None, "--evaluation", "none").operator_token is None


def test_operator_token_precedence_flag_then_environment_then_toml(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    flag_file = token_file(tmp_path, "from-the-flag-file-0123456789", name="flag")
    toml_file = token_file(tmp_path, "from-the-toml-file-0123456789", name="toml")
    toml = f"[server]\noperator_token_file = {json.dumps(str(toml_file))}\n"
    env_token = "from-the-environment-0123456789"
    monkeypatch.setenv(OPERATOR_TOKEN_ENV, env_token)
    s = settings(tmp_path, toml, "--evaluation", "none", "--operator-token-file", str(flag_file))
    assert s.operator_token == "from-the-flag-file-0123456789" and s.server.operator_token_file == str(flag_file)
    with caplog.at_level(logging.WARNING, logger="fl-coordinator.service.settings"):
        s = settings(tmp_path, toml, "--evaluation", "none")
    assert s.operator_token == env_token and s.server.operator_token_file == ""  # the TOML's file is not used
    assert "operator_token_file is not used" in caplog.text and env_token not in caplog.text
    monkeypatch.delenv(OPERATOR_TOKEN_ENV)
    assert settings(tmp_path, toml, "--evaluation", "none").operator_token == "from-the-toml-file-0123456789"


def test_the_token_itself_is_refused_in_toml(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as exc:
        settings(tmp_path, f'[server]\noperator_token = "{TOKEN}"\n', "--evaluation", "none")
    assert "unknown option(s) ['operator_token']" in str(exc.value) and "operator_token_file" in str(exc.value)
    assert TOKEN not in str(exc.value)


# ── model specs ─────────────────────────────────────────────────────────────────────────────────────────
def test_parse_model_forms(tmp_path: Path) -> None:
    spec = parse_model("mlp:64-16-10")
    assert spec == mlp([64, 16, 10])
    assert [type(x) for x in spec.layers] == [Linear, ReLU, Linear] and spec.num_classes == 10
    path = tmp_path / "model.json"
    path.write_text(spec.to_json())
    assert parse_model(str(path)) == spec
    assert parse_model(spec.to_dict()) == spec
    for bad in ("mlp:64-x-10", "mlp:64", "mlp:", "cnn:1", str(tmp_path / "missing.json")):
        with pytest.raises(SettingsError):
            parse_model(bad)


def test_parse_cnn_forms() -> None:
    assert parse_model("cnn:digits") == CNN_DIGITS
    assert parse_model("cnn:digits:8-16") == CNN_DIGITS
    assert parse_model("cnn:digits:4") == cnn((1, 8, 8), [4], 10)
    assert parse_model("cnn:digits:4-8-16").shapes()[-2:] == [(16,), (10,)]
    for bad, msg in (("cnn:mnist", "cnn:digits"), ("cnn:", "cnn:digits"), ("cnn:digits:8-x", "channel counts"),
                     ("cnn:digits:", "channel counts"), ("cnn:digits:4-8-16-32", "1 to 3"),
                     ("cnn:digits:0-8", "positive")):
        with pytest.raises(ValueError, match=msg):
            parse_model(bad)


def test_serve_takes_the_digits_cnn(tmp_path: Path) -> None:
    """``--model cnn:digits`` (or ``[model] spec``) with the default digits evaluation (input (1, 8, 8))."""
    s = settings(tmp_path, None, "--model", "cnn:digits")
    assert s.federation.model == CNN_DIGITS and s.model_text == "cnn:digits" and s.evaluation == "digits"
    assert settings(tmp_path, "[model]\nspec = 'cnn:digits:4-8'\n").federation.model == cnn((1, 8, 8), [4, 8], 10)
    with pytest.raises(SettingsError, match=r"model: .*1 to 3"):
        settings(tmp_path, None, "--model", "cnn:digits:1-2-3-4")


def test_model_from_flag_json_file_and_inline_table(tmp_path: Path) -> None:
    spec = mlp([64, 8, 10])
    path = tmp_path / "m.json"
    path.write_text(spec.to_json())
    s = settings(tmp_path, None, "--model", str(path))
    assert s.federation.model == spec and s.model_text == str(path) and s.evaluation == "digits"
    s = settings(tmp_path, f"[model]\nspec = {json.dumps(str(path))}\n")
    assert s.federation.model == spec
    inline = ("[model]\nspec = { input_shape = [64], num_classes = 10, layers = [ "
              "{ type = 'Linear', in_features = 64, out_features = 8 }, { type = 'ReLU' }, "
              "{ type = 'Linear', in_features = 8, out_features = 10 } ] }\n")
    s = settings(tmp_path, inline)
    assert s.federation.model == spec
    assert json.loads(s.model_text) == json.loads(json.dumps({"input_shape": [64], "num_classes": 10, "layers": [
        {"type": "Linear", "in_features": 64, "out_features": 8}, {"type": "ReLU"},
        {"type": "Linear", "in_features": 8, "out_features": 10}]}))
    # the flag beats the file's [model]
    assert settings(tmp_path, inline.replace("[model]", "[model]"), "--model", "mlp:64-10").federation.model == mlp(
        [64, 10])


@pytest.mark.parametrize("spec", [
    "{ input_shape = [64], layers = [ { type = 'Dense', units = 3 } ] }",
    "{ input_shape = [64], layers = [], colour = 'red' }",
    "{ input_shape = 64, layers = [] }",
])
def test_bad_inline_model(tmp_path: Path, spec: str) -> None:
    with pytest.raises(SettingsError, match="model"):
        settings(tmp_path, f"[model]\nspec = {spec}\n", "--evaluation", "none")


# ── the command line ────────────────────────────────────────────────────────────────────────────────────
def test_serve_help_lists_every_option() -> None:
    from coordinator.service.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    text = sub.choices["serve"].format_help()
    flat = " ".join(text.split())
    for name in [*SERVER_OPTIONS, *FED_OPTIONS]:
        assert "--" + name.replace("_", "-") in text, name
    for flag in ("--config", "--model", "--evaluation", "--exit-when-finished", "--no-exit-when-finished",
                 "--operator-token-file"):
        assert flag in text, flag
    assert OPERATOR_TOKEN_ENV in flat and "/status/operator" in flat and "Authorization: Bearer" in flat
    for help_text in [*SERVER_HELP.values(), *FEDERATION_HELP.values()]:
        assert " ".join(help_text.split())[:30] in flat, help_text  # argparse re-wraps the text
    assert set(SERVER_HELP) == set(SERVER_OPTIONS) and set(FEDERATION_HELP) == set(FED_OPTIONS)


def test_serve_with_an_invalid_combination_exits_2(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "coordinator.service.cli", "serve", "--clients-per-round", "3", "--group-size", "5",
         "--data-dir", str(tmp_path / "data"), "--evaluation", "none"],
        cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "fl-coordinator serve: error: invalid federation: group_size 5 > clients_per_round 3" in proc.stderr
    assert proc.stdout == ""
    assert not (tmp_path / "data").exists()  # nothing created before the settings are valid


def test_serve_with_a_short_operator_token_exits_2_without_echoing_it(tmp_path: Path) -> None:
    path = token_file(tmp_path, "tiny-secret\n")
    env = {k: v for k, v in os.environ.items() if k != OPERATOR_TOKEN_ENV}
    proc = subprocess.run(
        [sys.executable, "-m", "coordinator.service.cli", "serve", "--operator-token-file", str(path),
         "--data-dir", str(tmp_path / "data"), "--evaluation", "none"],
        cwd=REPO, capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 2, proc.stderr
    assert f"fl-coordinator serve: error: operator token from file {path}: 11 characters" in proc.stderr
    assert "tiny-secret" not in proc.stderr and proc.stdout == ""
    assert not (tmp_path / "data").exists()


def test_a_known_population_makes_the_grouping_risk_exact(tmp_path: Path) -> None:
    """15 clients, all in every round, 3 groups of 5, median tolerating 1 corrupted group, 1 Byzantine client: with
    each client Byzantine independently (β = 1/15) two groups can be corrupted (refused); with the population
    known there is exactly one Byzantine client, so at most one corrupted group (accepted)."""
    flags = ("--evaluation", "none", "--clients-per-round", "15", "--group-size", "5", "--aggregator", "median",
             "--byzantine", "1")
    with pytest.raises(SettingsError, match="grouping"):
        settings(tmp_path, None, *flags)
    s = settings(tmp_path, None, *flags, "--population", "15")
    assert s.server.population == 15
    with pytest.raises(SettingsError, match="population must be >= 1"):
        settings(tmp_path, None, *flags, "--population", "0")


def test_a_data_dir_from_before_the_compact_wire_options_resumes_under_their_legacy_values(tmp_path: Path) -> None:
    """A stored federation without ``rotation``/``downlink`` (created before they existed) ran without rotation and
    with the full-model downlink: it resumes with those settings and is refused – naming them and both values –
    with the new defaults, instead of a bare mismatch."""
    from coordinator.service.server import build_engine
    from coordinator.service.settings import federation_to_dict
    from coordinator.service.store import Store

    s = settings(tmp_path, None, "--evaluation", "none", "--downlink", "full", "--rotation", "false")
    old = json.loads(json.dumps(federation_to_dict(s.federation)))
    del old["rotation"], old["downlink"]
    store = Store(tmp_path / "data")
    try:
        store.set_config("federation", old)
        build_engine(s, store, bytes(32))  # resumes: the legacy values are these settings
        with pytest.raises(SettingsError, match=r"downlink: 'full' there, 'int8-delta' now, rotation: False there"):
            build_engine(settings(tmp_path, None, "--evaluation", "none"), store, bytes(32))
    finally:
        store.close()
