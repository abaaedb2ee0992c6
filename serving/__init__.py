"""Answering "what sounds like this?": one implementation behind the Python API, HTTP and the CLI."""
