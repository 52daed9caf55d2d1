"""Analyses of a run's logits and images: per-image disagreement and diversity
(`disagreement`), what image properties go with errors (`attribution`), and the controlled
degradation study that says whether they cause them (`intervention`).

`disagreement` and `attribution` are pure numpy/pandas/scipy; only `intervention` loads
models, and it imports TensorFlow inside its functions.
"""
