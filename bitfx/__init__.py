"""bitfx: compress PyTorch models for edge devices the way a compiler would."""

from bitfx.errors import BitfxError

__version__ = "0.1.0"
__all__ = ["BitfxError", "__version__", "load", "save"]


def __getattr__(name: str) -> object:
    """`bitfx.save` / `bitfx.load` (from `bitfx.checkpoint`), imported on first use so that
    `import bitfx` stays light."""
    if name in ("save", "load"):
        from bitfx import checkpoint

        return getattr(checkpoint, name)
    raise AttributeError(f"module 'bitfx' has no attribute {name!r}")
