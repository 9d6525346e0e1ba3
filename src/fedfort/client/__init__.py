"""The client role: local training, the state a client keeps between rounds, and its own
privacy policy and ledger."""

from typing import TYPE_CHECKING

from fedfort._lazy import lazy_exports

if TYPE_CHECKING:
    from fedfort.client.client import FederatedClient
    from fedfort.client.ledger import ClientLedger
    from fedfort.client.policy import ClientPrivacyPolicy
    from fedfort.client.training import ClientData, LocalTrainer, evaluate_vector

__all__ = [
    "ClientData",
    "ClientLedger",
    "ClientPrivacyPolicy",
    "FederatedClient",
    "LocalTrainer",
    "evaluate_vector",
]

if not TYPE_CHECKING:  # type checkers see the imports above; typos stay errors
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "FederatedClient": "fedfort.client.client",
            "ClientLedger": "fedfort.client.ledger",
            "ClientPrivacyPolicy": "fedfort.client.policy",
            "ClientData": "fedfort.client.training",
            "LocalTrainer": "fedfort.client.training",
            "evaluate_vector": "fedfort.client.training",
        },
        globals(),
    )
