"""docs/tutorial.md runs as written: its Python blocks in order, as one script, in an empty
directory; a block whose first line is `# file: NAME` is written to NAME instead of run."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

TUTORIAL = Path(__file__).resolve().parent.parent / "docs" / "tutorial.md"


def split_blocks(text: str) -> tuple[dict[str, str], str]:
    """The tutorial's files (name → text) and its script (the other Python blocks, in order)."""
    files, script = {}, []
    for block in re.findall(r"```python\n(.*?)```", text, re.S):
        named = re.match(r"# file: (\S+)\n", block)
        if named:
            files[named.group(1)] = block
        else:
            script.append(block)
    return files, "\n".join(script)


def test_tutorial_blocks_split_into_a_module_and_a_script() -> None:
    files, script = split_blocks(TUTORIAL.read_text())
    assert list(files) == ["mynet.py"] and "class MyNet" in files["mynet.py"]
    assert "from mynet import MyNet" in script and "bitfx.save(" in script and "load(" in script
    compile(script, str(TUTORIAL), "exec")


@pytest.mark.slow
def test_tutorial_runs_from_float_training_to_the_packed_runtime(tmp_path: Path, capsys) -> None:
    files, script = split_blocks(TUTORIAL.read_text())
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    sys.path.insert(0, str(tmp_path))
    try:
        exec(compile(script, str(TUTORIAL), "exec"), {"__name__": "__tutorial__"})
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("mynet", None)
        os.chdir(cwd)
    printed = capsys.readouterr().out
    for line in ("float accuracy:", "binary after fine-tuning:", "packed runtime accuracy:"):
        assert line in printed
    assert "binary MACs" in printed
    assert (tmp_path / "mynet-binary.bitfx").is_file() and (tmp_path / "mynet-binary.onnx").is_file()
