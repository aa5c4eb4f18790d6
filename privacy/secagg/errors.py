"""Typed errors of the secure-aggregation protocol."""

from __future__ import annotations

from flcrypto import SignatureError


class SecAggError(Exception):
    """Base class."""


class ProtocolError(SecAggError):
    """A message that is malformed, from the wrong round/group/phase, or unexpected now."""


class ReplayError(ProtocolError):
    """A message already received (same phase and sender)."""


class ThresholdError(SecAggError):
    """Too few participants survived for the threshold: the round fails and reveals nothing more."""


class SecAggSignatureError(SecAggError, SignatureError):
    """A protocol message's Ed25519 signature did not verify against the sender's identity key."""
