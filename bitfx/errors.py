"""The exceptions bitfx raises for bad input. Each message says what, where, and how to fix it."""


class BitfxError(Exception):
    """Base of every error bitfx raises on purpose; the CLI prints these as one line."""


class CaptureError(BitfxError):
    """The model could not be captured as a torch.fx graph."""


class ShapePropagationError(BitfxError):
    """Running a graph on its example inputs to record shapes failed."""


class PassConfigError(BitfxError):
    """A pass name, parameter or pipeline configuration is invalid."""


class PassError(BitfxError):
    """A pass failed, a pre/post-condition did not hold, or a check after it failed."""


class LoweringError(BitfxError):
    """A graph could not be lowered to, or loaded as, an ONNX file."""


class ModelSpecError(BitfxError):
    """A `package.module:factory` spec (model or data) could not be resolved."""


class CheckpointError(BitfxError):
    """A checkpoint could not be written, read, or rebuilt into its model."""
