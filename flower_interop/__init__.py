"""Flower interop (docs/flower.md): what a Flower user adds to get robust + secure + private aggregation.

- :mod:`flower_interop.strategy` – :class:`RobustFedAvg`, a Message-API strategy (``flwr.serverapp.strategy``)
  that runs any :mod:`aggregation` pipeline over the replies;
- :mod:`flower_interop.secure_workflow` – :class:`GroupedSecureFitWorkflow`, a legacy ``fit_workflow`` that runs
  secure aggregation per group (all groups' stages in one ``send_and_receive``) and a robust rule across groups;
- :mod:`flower_interop.secagg_mod` – our SecAgg+ (signed, ChaCha20 masks, the client's privacy policy and ledger)
  as a Flower client Mod.

This package needs the ``flower`` extra (``pip install fl-coordinator[flower]``); nothing in the core imports it.
"""
