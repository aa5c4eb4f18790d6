"""SecAgg+ (Bell et al. CCS'20 over Bonawitz et al. CCS'17): client and server state machines for one group,
public-randomness neighbour graph and group partition, Shamir sharing. See docs/secagg.md."""

from privacy.secagg.client import SERVER_ID, SecAggClient
from privacy.secagg.config import GroupConfig
from privacy.secagg.errors import (
           ProtocolError,
           ReplayError,
           SecAggError,
           SecAggSignatureError,
           ThresholdError,
)
from privacy.secagg.graph import default_degree, neighbour_graph, partition
from privacy.secagg.server import GroupResult, SecAggServer

__all__ = ["SERVER_ID", "GroupConfig", "GroupResult", "ProtocolError", "ReplayError", "SecAggClient",
           "SecAggError", "SecAggServer", "SecAggSignatureError", "ThresholdError", "default_degree",
           "neighbour_graph", "partition"]
