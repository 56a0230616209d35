"""`bitfx.save` / `bitfx.load`: rebuild from the recipe, load weights with weights_only=True, clear errors,
and training that resumes bit-identically from a checkpoint."""

import re
from pathlib import Path

import pytest
import torch
from torch import fx, nn

import bitfx
from bitfx.checkpoint import load_checkpoint
from bitfx.errors import CheckpointError
from bitfx.ir import capture
from bitfx.passes import Pipeline
from bitfx.train import after_optimizer_step
from tests.helpers import randomize_batchnorm

SPEC = "tests.test_checkpoint:small_cnn"


def small_cnn(width: int = 8) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1, bias=False),
        nn.BatchNorm2d(2 * width),
        nn.ReLU(),
        nn.Conv2d(2 * width, 2 * width, 3, padding=1, bias=False),
        nn.BatchNorm2d(2 * width),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * width, 10),
    )


def _captured(width: int = 8) -> tuple[fx.GraphModule, torch.Tensor]:
    torch.manual_seed(1)
    x = torch.randn(2, 3, 16, 16)
    return capture(randomize_batchnorm(small_cnn(width)).eval(), (x,)), x


PIPELINES = ["", "fuse_bn", "fuse_bn,binarize", "binarize,rotate(seed=2)", "rank_prune(rate=0.5)", "pams(bits=4)"]


@pytest.mark.parametrize("spec", PIPELINES)
def test_a_saved_model_loads_back_with_the_same_weights_and_outputs(tmp_path: Path, spec: str) -> None:
    gm, x = _captured()
    data = [torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    rewritten = Pipeline.from_spec(spec).run(gm, data=data).graph_module if spec else gm
    path = bitfx.save(rewritten, tmp_path / "model.bitfx", model=SPEC, pipeline=spec or None, extra={"epoch": 3})
    assert torch.load(path, weights_only=True)["recipe"]["model"] == SPEC  # plain data, no pickled code
    checkpoint = load_checkpoint(path)
    loaded = checkpoint.model
    assert checkpoint.extra == {"epoch": 3}
    assert loaded.code == rewritten.code
    state = rewritten.state_dict()
    assert list(loaded.state_dict()) == list(state)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), rewritten.eval()(x))
    assert [p.name for p in tmp_path.iterdir()] == ["model.bitfx"]  # no temp file left behind
    bitfx.save(loaded, tmp_path / "again.bitfx")  # a loaded model remembers its recipe
    assert torch.equal(bitfx.load(tmp_path / "again.bitfx").eval()(x), rewritten(x))


def test_save_refuses_a_recipe_that_does_not_rebuild_the_model(tmp_path: Path) -> None:
    gm, _ = _captured()
    binarized = Pipeline.from_spec("binarize").run(gm).graph_module
    differs = r"passes \[\]\) does not rebuild this model: module '\d+' is BinaryConv2d here and Conv2d when rebuilt"
    with pytest.raises(CheckpointError, match=differs):
        bitfx.save(binarized, tmp_path / "m.bitfx", model=SPEC)
    with pytest.raises(CheckpointError, match="state dict entry '0.weight' is"):
        bitfx.save(gm, tmp_path / "m.bitfx", model=SPEC, model_kwargs={"width": 4})
    with pytest.raises(CheckpointError, match="needs model="):
        bitfx.save(gm, tmp_path / "m.bitfx")
    with pytest.raises(CheckpointError, match="cannot import 'no_such_module'"):
        bitfx.save(gm, tmp_path / "m.bitfx", model="no_such_module:f")
    assert not any(tmp_path.iterdir())


def test_a_failed_save_leaves_the_previous_file_intact(tmp_path: Path) -> None:
    gm, x = _captured()
    path = bitfx.save(gm, tmp_path / "m.bitfx", model=SPEC)
    before = path.read_bytes()
    with pytest.raises(Exception):
        bitfx.save(gm, path, model=SPEC, extra={"not data": lambda: None})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.bitfx"]


def _rewrite(path: Path, **changes) -> None:
    payload = torch.load(path, weights_only=True)
    payload.update(changes)
    torch.save(payload, path)


def test_each_bad_file_is_one_clear_error(tmp_path: Path) -> None:
    gm, _ = _captured()
    with pytest.raises(CheckpointError, match="does not exist"):
        bitfx.load(tmp_path / "missing.bitfx")
    (tmp_path / "junk.bitfx").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="is not a bitfx checkpoint: torch.load failed"):
        bitfx.load(tmp_path / "junk.bitfx")
    torch.save(gm, tmp_path / "pickled.pt")
    with pytest.raises(CheckpointError, match="holds pickled objects"):
        bitfx.load(tmp_path / "pickled.pt")
    torch.save(gm.state_dict(), tmp_path / "state.pt")
    with pytest.raises(CheckpointError, match="not a bitfx checkpoint .written by bitfx.save.; for a plain state dict"):
        bitfx.load(tmp_path / "state.pt")
    path = bitfx.save(gm, tmp_path / "m.bitfx", model=SPEC)
    full = path.read_bytes()
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(CheckpointError, match="is not a bitfx checkpoint: torch.load failed"):
        bitfx.load(path)
    path.write_bytes(full)
    _rewrite(path, version=99)
    with pytest.raises(CheckpointError, match="format version 99; this bitfx reads version 1; upgrade bitfx"):
        bitfx.load(path)
    path.write_bytes(full)
    state = gm.state_dict()
    state["3.weight"] = state["3.weight"][:4]
    _rewrite(path, state_dict=state)
    with pytest.raises(CheckpointError, match=r"do not fit .* entry '3.weight' is \(4, 8, 3, 3\)"):
        bitfx.load(path)
    path.write_bytes(full)
    del state["3.weight"]
    _rewrite(path, state_dict=state)
    with pytest.raises(CheckpointError, match=r"missing \['3.weight'\]"):
        bitfx.load(path)


def test_a_pass_that_cannot_replay_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gm, _ = _captured()
    pruned = Pipeline.from_spec("rank_prune(rate=0.5)").run(gm, data=[torch.randn(4, 3, 16, 16)]).graph_module
    monkeypatch.setattr("bitfx.checkpoint._REPLAY_PARAMS", {})  # replay rank_prune as written: it needs data
    with pytest.raises(CheckpointError, match="cannot rebuild .*pass 'rank_prune'.*calibration batches"):
        bitfx.save(pruned, tmp_path / "m.bitfx", model=SPEC, pipeline="rank_prune(rate=0.5)")


def _train(gm: fx.GraphModule, optimizer: torch.optim.Optimizer, batches: list) -> None:
    gm.train()
    for x, y in batches:
        optimizer.zero_grad()
        nn.functional.cross_entropy(gm(x), y).backward()
        optimizer.step()
        after_optimizer_step(gm)


def _sgd(gm: fx.GraphModule) -> torch.optim.Optimizer:
    return torch.optim.SGD(gm.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)


def test_training_resumes_bit_identically_from_a_checkpoint(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    batches = [
        (torch.randn(8, 3, 32, 32, generator=generator), torch.randint(0, 10, (8,), generator=generator))
        for _ in range(6)
    ]
    first, rest = batches[:3], batches[3:]

    def binarized() -> fx.GraphModule:
        torch.manual_seed(0)
        from bitfx.zoo import resnet20

        gm = capture(resnet20().eval(), (batches[0][0][:1],))
        return Pipeline.from_spec("binarize").run(gm).graph_module

    straight = binarized()
    optimizer = _sgd(straight)
    _train(straight, optimizer, batches)

    interrupted = binarized()
    optimizer = _sgd(interrupted)
    _train(interrupted, optimizer, first)
    path = bitfx.save(
        interrupted,
        tmp_path / "step3.bitfx",
        model="bitfx.zoo:resnet20",
        pipeline="binarize",
        extra={"optimizer": optimizer.state_dict()},
    )
    checkpoint = load_checkpoint(path)
    resumed = checkpoint.model
    optimizer = _sgd(resumed)
    optimizer.load_state_dict(checkpoint.extra["optimizer"])
    _train(resumed, optimizer, rest)

    expected = dict(straight.named_parameters())
    assert list(dict(resumed.named_parameters())) == list(expected)
    for name, value in resumed.named_parameters():
        assert torch.equal(value, expected[name]), name
    for name, value in resumed.named_buffers():
        assert torch.equal(value, dict(straight.named_buffers())[name]), name
    assert not all(torch.equal(p, q) for p, q in zip(straight.parameters(), binarized().parameters()))  # it did train


def test_the_save_and_load_guide_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    guide = Path(__file__).resolve().parent.parent / "docs" / "save-and-load.md"
    code = "\n".join(re.findall(r"```python\n(.*?)```", guide.read_text(), re.S))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, str(guide), "exec"), namespace)
    assert (tmp_path / "resnet20-binary.bitfx").is_file()
    assert namespace["checkpoint"].extra["epoch"] == 5
