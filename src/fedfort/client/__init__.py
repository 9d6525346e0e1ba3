"""The client role: local training, the state a client keeps between rounds, and its own
privacy policy and ledger."""

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
