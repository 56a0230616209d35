"""Example models and datasets for trying bitfx end to end."""
