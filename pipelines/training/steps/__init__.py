"""The training pipeline as four steps, one module each: prepare -> train -> evaluate -> gate.

Each takes the settings and the job and returns small JSON-able values, so the ``train_triplet_model`` DAG
runs one step per task and ``musicrec train`` runs them in a row (docs/training.md).
"""
