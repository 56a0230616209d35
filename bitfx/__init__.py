"""bitfx: compress PyTorch models for edge devices the way a compiler would."""

from bitfx.errors import BitfxError

__version__ = "0.1.0"  # the one place the version is written (pyproject.toml reads it)
__all__ = ["BitfxError", "__version__", "load", "save"]


def __getattr__(name: str) -> object:
    """`bitfx.save` / `bitfx.load` (from `bitfx.checkpoint`), imported on first use so that
    `import bitfx` stays light."""
    if name in ("save", "load"):
        try:
            from bitfx import checkpoint
        except ModuleNotFoundError as error:
            raise BitfxError(
                f"bitfx.{name} needs the full bitfx install (with torch); this one lacks {error.name} "
                "(bitfx-runtime holds only the packed runtime)"
            ) from error

        return getattr(checkpoint, name)
    raise AttributeError(f"module 'bitfx' has no attribute {name!r}")
