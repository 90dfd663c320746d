"""Latency and accuracy harnesses; each writes JSON that a report can cite."""
