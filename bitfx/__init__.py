"""bitfx: compress PyTorch models for edge devices the way a compiler would."""

from bitfx.errors import BitfxError

__version__ = "0.1.0"
__all__ = ["BitfxError", "__version__"]
