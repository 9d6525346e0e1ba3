"""Anomaly scores for client updates, a detector that flags outliers, and client reputation."""

from fedfort.aggregation.history import ClientHistory, CountSketch
from fedfort.detection.detector import COMPONENTS, AnomalyDetector, DetectionReport
from fedfort.detection.reputation import ReputationLedger

__all__ = [
    "COMPONENTS",
    "AnomalyDetector",
    "ClientHistory",
    "CountSketch",
    "DetectionReport",
    "ReputationLedger",
]
