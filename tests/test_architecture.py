"""The package map of docs/architecture.md, checked against every module's imports."""

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "bitfx"

# Third-party top-level modules and bitfx packages each package may import (besides itself,
# the standard library and bitfx.errors). The order of the table in docs/architecture.md.
ALLOWED = {
    "bitfx.format": {"numpy"},
    "bitfx.specs": set(),
    "bitfx.ir": {"torch", "numpy", "networkx", "bitfx.format"},
    "bitfx.passes.core": {"torch", "tqdm", "bitfx.ir"},
    "bitfx.passes": {"torch", "numpy", "networkx", "tqdm", "bitfx.ir", "bitfx.passes.core"},
    "bitfx.train": {"torch", "bitfx.ir"},
    "bitfx.eval": {"numpy"},
    "bitfx.search": {"torch", "bitfx.ir", "bitfx.train"},
    "bitfx.backends.onnx": {
        "torch",
        "onnx",
        "onnxscript",
        "onnx_ir",
        "onnxruntime",
        "numpy",
        "bitfx.ir",
        "bitfx.format",
    },
    "bitfx.backends.packed": {"numpy", "onnx", "bitfx.format"},
    "bitfx.checkpoint": {"torch", "bitfx.ir", "bitfx.passes", "bitfx.specs"},
    "bitfx.zoo": {"torch", "numpy", "sklearn", "skimage"},
}


def _package_of(module: str) -> str | None:
    """The most specific package of ALLOWED that `module` belongs to."""
    matches = [name for name in ALLOWED if module == name or module.startswith(name + ".")]
    return max(matches, key=len) if matches else None


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def _modules():
    for path in sorted(ROOT.rglob("*.py")):
        module = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts).removesuffix(".__init__")
        package = _package_of(module)
        if package is not None:
            yield pytest.param(module, package, path, id=module)


def _violations(module: str, package: str, imported: set[str]) -> list[str]:
    own = {package, "bitfx.errors"} | ALLOWED[package]
    bad = []
    for name in sorted(imported):
        top = name.split(".")[0]
        if top in sys.stdlib_module_names or top == "__future__":
            continue
        if top != "bitfx":
            if top not in own:
                bad.append(name)
            continue
        if not any(name == allowed or name.startswith(allowed + ".") for allowed in own if allowed.startswith("bitfx")):
            bad.append(name)
    return bad


@pytest.mark.parametrize(("module", "package", "path"), list(_modules()))
def test_module_imports_follow_the_package_map(module, package, path):
    assert _violations(module, package, _imports(path)) == [], f"{module} imports outside what {package} may import"


def test_the_check_catches_a_forbidden_import():
    assert _violations("bitfx.backends.packed.kernels", "bitfx.backends.packed", {"torch"}) == ["torch"]
    assert _violations("bitfx.passes.fuse_bn", "bitfx.passes", {"bitfx.backends.onnx"}) == ["bitfx.backends.onnx"]
    assert _violations("bitfx.ir.cost", "bitfx.ir", {"bitfx.passes.core.base"}) == ["bitfx.passes.core.base"]
