"""The README's quick start runs exactly as written."""

import os
import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_quick_start_runs(tmp_path, capsys):
    text = README.read_text()
    section = text.split("## Quick start", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(compile(code, str(README), "exec"), {})
    finally:
        os.chdir(cwd)
    printed = capsys.readouterr().out
    assert "total" in printed and "BatchNorm2d" in printed  # the summary and the diff were shown
    assert (tmp_path / "resnet20.onnx").stat().st_size > 1_000_000


def test_readme_gives_exactly_two_setup_commands_and_ci_runs_the_test_one():
    setup = README.read_text().split("## Set-up", 1)[1].split("##", 1)[0]
    commands = re.findall(r"^(\./\S+ \S+)", setup, re.M)
    assert commands == ["./dev demo", "./dev test"]
    ci = (README.parent / ".ci" / "run").read_text()
    assert "./dev test" in ci
