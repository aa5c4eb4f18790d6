"""ClientApp: a NumPyClient whose fit returns a seeded random update, behind Flower's ``secaggplus_mod`` – or,
for messages of fl-coordinator's grouped workflow, behind our SecAgg+ Mod (flower_interop.secagg_mod) with a
policy that accepts the benchmark's noise-free task (the bench measures cost, not privacy)."""

from __future__ import annotations

from typing import Any

from flwr.client import ClientApp, NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.common import Context

from fbench_app.common import MAX_WEIGHT, update


class RandomUpdateClient(NumPyClient):
    """Returns ``update(partition_id, round)`` as its new parameters (num_examples = MAX_WEIGHT)."""

    def __init__(self, partition_id: int, dim: int) -> None:
        self.partition_id = partition_id
        self.dim = dim

    def fit(self, parameters: Any, config: dict[str, Any]) -> tuple[list[Any], int, dict[str, Any]]:
        return [update(self.partition_id, int(config["server-round"]), self.dim)], MAX_WEIGHT, {}


def client_fn(context: Context) -> Any:
    dim = int(context.run_config["dim"])
    return RandomUpdateClient(int(context.node_config["partition-id"]), dim).to_client()


def either_secagg_mod(msg: Any, context: Context, call_next: Any) -> Any:
    """Our Mod for our workflow's messages, Flower's for Flower's."""
    if "fl-secagg" in msg.content.config_records:
        from flcore.policy import PrivacyPolicy
        from flower_interop.secagg_mod import make_secagg_mod

        return make_secagg_mod(PrivacyPolicy.permissive())(msg, context, call_next)
    return secaggplus_mod(msg, context, call_next)


app = ClientApp(client_fn=client_fn, mods=[either_secagg_mod])
