"""Runnable examples: ``python -m examples.<name> [--quick]`` from the repository root."""
