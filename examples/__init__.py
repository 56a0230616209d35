"""End-to-end scripts, run from the repository root as ``python -m examples.NAME`` (not installed)."""
