"""The client role: local training and the state a client keeps between rounds."""

from fedfort.client.client import FederatedClient
from fedfort.client.training import ClientData, LocalTrainer, evaluate_vector

__all__ = ["ClientData", "FederatedClient", "LocalTrainer", "evaluate_vector"]
