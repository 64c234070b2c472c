"""Checkpoint files: formats, safe loading, layout conversion, hashes, configs."""
