"""Edge-box runtime: inference backends (no torch, no transformers)."""
