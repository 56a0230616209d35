import io
from dataclasses import dataclass, field
from typing import Literal

import pytest
import torch
from helpers import assert_same_state, randomize_batchnorm, state_snapshot
from torch import fx, nn

from bitfx import zoo
from bitfx.errors import PassConfigError, PassError
from bitfx.ir import capture
from bitfx.passes import (
    DumpAfterChange,
    LayerSelection,
    Pass,
    PassResult,
    Pipeline,
    PrintAfterChange,
    create_pass,
    register_pass,
)


@dataclass
class ScaleOutput(Pass):
    """Multiplies the graph output by `factor` (changes outputs)."""

    name = "scale_output"
    factor: float = 2.0

    def run(self, gm, context):
        output = next(n for n in gm.graph.nodes if n.op == "output")
        with gm.graph.inserting_before(output):
            scaled = gm.graph.call_function(torch.mul, (output.args[0], self.factor))
        output.args = (scaled,)
        return PassResult(gm, True, {"factor": self.factor})


@dataclass
class LyingScale(ScaleOutput):
    """Changes outputs but claims not to."""

    name = "lying_scale"
    preserves_outputs = True


@dataclass
class CorruptThenFail(Pass):
    """Rewrites weights and the graph in place, then raises half-way."""

    name = "corrupt_then_fail"

    def run(self, gm, context):
        for p in gm.parameters():
            p.data.fill_(7.0)
        for node in list(gm.graph.nodes):
            if node.op == "call_module":
                node.replace_all_uses_with(node.args[0])
                gm.graph.erase_node(node)
                break
        raise RuntimeError("boom in the middle of a rewrite")


@dataclass
class NeedsLinear(Pass):
    name = "needs_linear"

    def requires(self, gm):
        if not any(isinstance(m, nn.Linear) for m in gm.modules()):
            raise PassError("the graph has no Linear layer")

    def run(self, gm, context):
        return PassResult(gm, False)


@dataclass
class Typed(Pass):
    name = "typed_for_test"
    rate: float = 0.5
    steps: int = 1
    mode: Literal["a", "b"] = "a"
    layers: tuple[str, ...] = ()
    select: LayerSelection = field(default_factory=lambda: LayerSelection(default=True))

    def run(self, gm, context):
        return PassResult(gm, False)


register_pass(Typed)


def _captured():
    model = randomize_batchnorm(zoo.resnet20())
    return model, capture(model, torch.randn(2, 3, 32, 32))


def test_failing_pass_names_itself_and_previous_passes_and_leaves_model_untouched():
    model, gm = _captured()
    model_state, gm_state, code = state_snapshot(model), state_snapshot(gm), gm.code
    pipeline = Pipeline([create_pass("fuse_bn"), ScaleOutput(), CorruptThenFail()])
    with pytest.raises(PassError) as info:
        pipeline.run(gm)
    message = str(info.value)
    assert "'corrupt_then_fail' (number 3; passes run before it: fuse_bn, scale_output)" in message
    assert "boom in the middle" in message and "left unchanged" in message
    assert_same_state(model, model_state)
    assert_same_state(gm, gm_state)
    assert gm.code == code
    assert any(isinstance(m, nn.BatchNorm2d) for m in gm.modules())


def test_numerical_check_catches_a_pass_that_lies_about_preserving_outputs():
    _, gm = _captured()
    with pytest.raises(PassError, match="'lying_scale'.*outputs changed: max relative error 1 > tolerance 1e-05"):
        Pipeline([LyingScale()]).run(gm)
    result = Pipeline([ScaleOutput()]).run(gm)  # honest: not checked
    assert result.records[0].max_rel_error is None and result.records[0].modified


def test_check_compares_with_the_graph_before_the_pass_not_the_original():
    _, gm = _captured()
    result = Pipeline([ScaleOutput(), create_pass("fuse_bn")]).run(gm)
    assert result.records[1].max_rel_error < 1e-5
    x = gm.meta["bitfx_example_inputs"][0]
    torch.testing.assert_close(result.graph_module.eval()(x), 2 * gm.eval()(x), rtol=1e-4, atol=1e-4)


def test_requires_failure_is_reported_with_the_pass_name():
    _, gm = _captured()
    conv_only = capture(nn.Conv2d(3, 3, 1), torch.randn(1, 3, 4, 4))
    with pytest.raises(PassError, match="'needs_linear'.*no Linear layer"):
        Pipeline([NeedsLinear()]).run(conv_only)
    assert Pipeline([NeedsLinear()]).run(gm).records[0].modified is False


def test_pipeline_without_example_inputs_is_a_clear_error():
    gm = fx.symbolic_trace(nn.Conv2d(3, 3, 1))
    with pytest.raises(PassError, match="needs example inputs"):
        Pipeline([create_pass("fuse_bn")]).run(gm)


def test_shapes_are_repropagated_after_each_pass():
    _, gm = _captured()
    result = Pipeline([ScaleOutput()]).run(gm)
    mul = next(n for n in result.graph_module.graph.nodes if n.target is torch.mul)
    assert tuple(mul.meta["tensor_meta"].shape) == (2, 10)


def test_instruments_print_and_dump_after_each_change(tmp_path):
    _, gm = _captured()
    stream = io.StringIO()
    Pipeline(
        [create_pass("fuse_bn"), NeedsLinear(), ScaleOutput()],
        instruments=[PrintAfterChange(stream), DumpAfterChange(tmp_path)],
    ).run(gm)
    printed = stream.getvalue()
    assert "after pass 1: fuse_bn" in printed and "after pass 3: scale_output" in printed
    assert "needs_linear" not in printed  # it changed nothing
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"{i}-{n}.{ext}" for i, n in (("01", "fuse_bn"), ("03", "scale_output")) for ext in ("dot", "py", "txt")
    ]
    assert "BatchNorm2d" not in (tmp_path / "01-fuse_bn.txt").read_text()


def test_result_table_has_timing_and_stats():
    _, gm = _captured()
    result = Pipeline.from_spec("fuse_bn").run(gm)
    record = result.records[0]
    assert record.seconds > 0 and record.stats["fused"] == 21
    assert "fuse_bn" in str(result) and "fused=21" in str(result)


def test_spec_parsing_coerces_and_checks_parameters():
    pipeline = Pipeline.from_spec("fuse_bn, typed_for_test(rate=1, steps=3, mode=b, layers=[x, 'y'])")
    typed = pipeline.passes[1]
    assert (typed.rate, typed.steps, typed.mode) == (1.0, 3, "b") and isinstance(typed.rate, float)
    with pytest.raises(PassConfigError, match=r"unknown pass 'nope'; available passes: .*fuse_bn"):
        Pipeline.from_spec("fuse_bn,nope")
    with pytest.raises(
        PassConfigError, match=r"no parameter 'rat'; its parameters are: rate: float, steps: int, mode: 'a' \| 'b'"
    ):
        Pipeline.from_spec("typed_for_test(rat=0.1)")
    with pytest.raises(PassConfigError, match=r"mode='c' is not one of 'a', 'b'"):
        Pipeline.from_spec("typed_for_test(mode=c)")
    with pytest.raises(PassConfigError, match=r"steps=1.5 should be int"):
        Pipeline.from_spec("typed_for_test(steps=1.5)")
    with pytest.raises(PassConfigError, match="unbalanced brackets"):
        Pipeline.from_spec("typed_for_test(steps=1")
    with pytest.raises(PassConfigError, match="nothing after"):
        Pipeline.from_spec("typed_for_test(steps=1)x")
    with pytest.raises(PassConfigError, match="key=value"):
        Pipeline.from_spec("typed_for_test(3)")


def test_toml_round_trip_replays_the_same_pipeline(tmp_path):
    selection = LayerSelection(
        default=True, by_type={"Linear": False}, by_regex={r"layers\.0\..*": False}, by_name={"conv1": False}
    )
    pipeline = Pipeline(
        [create_pass("fuse_bn"), Typed(rate=0.25, steps=2, mode="b", layers=("a", "b"), select=selection)], rtol=1e-6
    )
    path = tmp_path / "pipeline.toml"
    pipeline.save(path)
    again = Pipeline.from_file(path)
    assert again.to_config() == pipeline.to_config()
    assert again.rtol == 1e-6 and again.passes[1].select == selection


@pytest.mark.parametrize(
    "text, message",
    [
        ("[[passes]]\nname = 'nope'\n", "unknown pass 'nope'"),
        ("[[passes]]\nname = 'fuse_bn'\nfoo = 1\n", "no parameter 'foo'"),
        ("[[passes]]\nscheme = 'x'\n", "entry 1 has no name"),
        ("[chekc]\nrtol = 1\n", "unknown top-level keys"),
        ("[[passes]\n", "not valid TOML"),
    ],
)
def test_bad_pipeline_files_are_rejected(tmp_path, text, message):
    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(PassConfigError, match=message):
        Pipeline.from_file(path)
    with pytest.raises(PassConfigError, match="does not exist"):
        Pipeline.from_file(tmp_path / "missing.toml")
