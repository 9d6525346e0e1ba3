"""One place for a run: what the server side of a federation is built from and returns.

- :mod:`~fedfort.run.federation`: :class:`Federation`, the server's half of a run shared by
  every runtime (model, pipeline, checkpoints, resume, rollback);
- :mod:`~fedfort.run.features`: the round's pipeline assembled from features;
- :mod:`~fedfort.run.composition`: components given as objects become the run's config;
- :mod:`~fedfort.run.data`: the data split both sides agree on;
- :mod:`~fedfort.run.privacy`: the ``[privacy]`` stages and the clients' privacy settings;
- :mod:`~fedfort.run.resume`: checks before a stored run continues;
- :mod:`~fedfort.run.result`: :class:`RunResult`, what every runtime returns;
- :mod:`~fedfort.run.threads`: thread counts a run sets for its own duration.

Modules are imported where they are used (``from fedfort.run.federation import Federation``);
this package imports nothing itself, so naming it costs nothing.
"""
