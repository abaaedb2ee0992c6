"""The training tests' synthetic catalogue and per-test registries, shared with the evaluation tests."""

from tests.pipelines.training.conftest import synth_catalogue, synth_settings

__all__ = ["synth_catalogue", "synth_settings"]
