"""Training strategies contributed by this package, one folder per strategy (``config.py``, ``strategy.py``).

Nothing is imported here: the plugin registers the classes as ``"module:attr"`` strings, so listing strategies never
imports ltx-trainer.
"""
