"""Evaluating models and baselines on labelled catalogues, with intervals over sources."""
