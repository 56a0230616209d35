"""The files a command writes: checked before any work starts, written beside their targets
under temporary names, and renamed into place together at the end.

A failed or interrupted command therefore never leaves a truncated file and never changes a
file that was there before; its temporary files are removed.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from bitfx.errors import BitfxError


class OutputPathError(BitfxError):
    """An output path names a directory, a missing or unwritable place, or another output's file."""


class OutputFiles:
    """The outputs of one command, by option (`{"-o": "m.onnx", "--report": None, ...}`; None
    means not asked for). Use as a context manager: write each file to `staged(option)`, call
    `commit()` when everything succeeded; leaving the block without `commit()` removes them."""

    def __init__(self, paths: Mapping[str, str | None]) -> None:
        self._given: dict[str, Path] = {}
        self._targets: dict[str, Path] = {}
        self._staged: dict[str, Path] = {}
        owners: dict[Path, str] = {}
        for option, text in paths.items():
            if text is None:
                continue
            given, target = Path(text).expanduser(), check_output_path(option, text)
            if target in owners:
                raise OutputPathError(
                    f"{owners[target]} and {option} both name {str(target)!r}; give each output its own file"
                )
            owners[target] = option
            self._given[option], self._targets[option] = given, target
        try:
            for option, target in self._targets.items():
                self._staged[option] = _reserve(option, target)
        except BaseException:
            self.discard()
            raise

    def __enter__(self) -> OutputFiles:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.discard()

    def target(self, option: str) -> Path:
        """The path of `option` as the user wrote it."""
        return self._given[option]

    def staged(self, option: str) -> Path:
        """The temporary file to write the output of `option` to."""
        return self._staged[option]

    def commit(self) -> None:
        """Move every staged file onto its target (each an atomic rename in its directory)."""
        mode = 0o666 & ~_umask()
        for option, staged in list(self._staged.items()):
            target = self._targets[option]
            with open(staged, "rb") as file:
                os.fsync(file.fileno())
            os.chmod(staged, target.stat().st_mode & 0o777 if target.exists() else mode)
            os.replace(staged, target)
            del self._staged[option]

    def discard(self) -> None:
        """Remove the staged files that were not committed."""
        for staged in self._staged.values():
            staged.unlink(missing_ok=True)
        self._staged.clear()


def check_output_path(option: str, text: str) -> Path:
    """The resolved path `option` names, once it is known to be a file that can be written in an
    existing directory; otherwise an `OutputPathError` that says what to change."""
    if not text.strip():
        raise OutputPathError(f"{option} is empty; give a file name")
    target = Path(text).expanduser().resolve()
    if target.is_dir():
        raise OutputPathError(f"{option} {text!r} is a directory; name a file in it, e.g. {str(Path(text) / 'out')!r}")
    if target.exists() and not target.is_file():
        raise OutputPathError(f"{option} {text!r} is not a regular file (a device, pipe or socket); name a file")
    folder = target.parent
    if not folder.exists():
        raise OutputPathError(
            f"{option} {text!r}: the directory {str(folder)!r} does not exist; create it first or choose another path"
        )
    if not folder.is_dir():
        raise OutputPathError(f"{option} {text!r}: {str(folder)!r} is not a directory")
    return target


def _reserve(option: str, target: Path) -> Path:
    """Create the temporary file for `target` in its directory, proving the directory is writable."""
    try:
        handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as error:
        raise OutputPathError(
            f"{option} {str(target)!r}: cannot write in {str(target.parent)!r} ({error.strerror}); "
            "choose a writable directory"
        ) from error
    os.close(handle)
    return Path(name)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
