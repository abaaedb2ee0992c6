"""The catalogue: which audio files are tracks, with what style and provenance (the manifest)."""
