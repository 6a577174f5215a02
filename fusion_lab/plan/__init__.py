"""The plan: from a study file to validated runs. Study files and their expansion into
runs with ids (``study``; dotted keys and the merging of config dicts: ``dotted``), the
one place that turns a user's argument into a study or a run (``find``), and the one that
loads a study's plugins and validates every run before anything trains (``planning``).

May import: models and data (validation assembles models on the meta device and opens
dataset indexes, imported inside the functions that need them, so that importing the plan
imports no torch), config, store, registries, errors.
"""
