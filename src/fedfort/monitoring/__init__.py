"""Monitoring: Prometheus metrics, the run dashboard and its state reader."""
