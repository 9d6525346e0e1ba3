"""Secure aggregation: the server learns the sum of the clients' updates and nothing else.

See ``docs/secure-aggregation.md`` for the protocols, their trust models and their costs.
"""
