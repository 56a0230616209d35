"""SKT distillation loss, feature taps and PAMS optimizer groups."""

import pytest
import torch

from bitfx.ir import capture
from bitfx.ir.quant import ActQuant
from bitfx.passes import PAMSQuantize, Pipeline
from bitfx.train import DEFAULT_SKT_WEIGHT, attention_map, pams_parameter_groups, skt_loss, with_taps
from bitfx.zoo import edsr_lite


def test_attention_map_is_the_normalised_channel_mean_of_squares():
    features = torch.randn(2, 5, 3, 4)
    maps = attention_map(features)
    assert maps.shape == (2, 12)
    torch.testing.assert_close(maps.norm(dim=1), torch.ones(2))
    manual = (features**2).mean(dim=1).flatten(1)
    torch.testing.assert_close(maps, manual / manual.norm(dim=1, keepdim=True))
    torch.testing.assert_close(attention_map(3 * features), maps)  # scale-free
    with pytest.raises(ValueError, match="N × C × spatial"):
        attention_map(torch.randn(2, 5))


def test_skt_loss_is_zero_for_equal_maps_and_trains_only_the_student():
    teacher = torch.randn(2, 4, 6, 6, requires_grad=True)
    assert float(skt_loss([teacher.detach() * 2], [teacher])) == pytest.approx(0.0, abs=1e-12)
    student = torch.randn(2, 4, 6, 6, requires_grad=True)
    loss = skt_loss([student, student], [teacher, teacher])
    expected = ((attention_map(student) - attention_map(teacher)) ** 2).mean()
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0 and teacher.grad is None
    assert DEFAULT_SKT_WEIGHT == 1000.0
    with pytest.raises(ValueError, match="same, non-zero number"):
        skt_loss([student], [])


def test_taps_return_intermediate_features_and_share_parameters():
    torch.manual_seed(0)
    model = edsr_lite().eval()
    x = torch.rand(1, 3, 24, 24)
    gm = capture(model, x)
    tail_input = next(n for n in gm.graph.nodes if n.op == "call_module" and n.target == "tail.0.0").args[0].name
    tapped = with_taps(gm, [tail_input])
    output, (features,) = tapped(x)
    torch.testing.assert_close(output, gm(x))
    with torch.no_grad():
        head = model.head(model.sub_mean(x))
        torch.testing.assert_close(features, head + model.body(head))
    assert tapped.get_submodule("head").weight is gm.get_submodule("head").weight
    with pytest.raises(ValueError, match="no nodes named"):
        with_taps(gm, ["nope"])


def test_a_distillation_step_moves_student_towards_teacher_and_alphas_have_their_group():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 16)
    teacher = capture(edsr_lite().eval(), x)
    student = Pipeline([PAMSQuantize(bits=4)]).run(teacher, data=[x]).graph_module
    node = next(n for n in teacher.graph.nodes if n.op == "call_module" and n.target == "tail.0.0").args[0].name
    tapped_teacher, tapped_student = with_taps(teacher, [node]), with_taps(student, [node])
    groups = pams_parameter_groups(student, lr=1e-4, alpha_lr=1e-3)
    alphas = [m.alpha for m in student.modules() if isinstance(m, ActQuant)]
    assert [id(p) for p in groups[1]["params"]] == [id(a) for a in alphas] and groups[1]["weight_decay"] == 0.0
    assert pams_parameter_groups(student, lr=1e-4)[1]["lr"] == 1e-2 and not {id(p) for p in groups[0]["params"]} & {
        id(a) for a in alphas
    }
    optimizer = torch.optim.Adam(groups)
    with torch.no_grad():
        _, target = tapped_teacher(x)

    def loss() -> torch.Tensor:
        _, features = tapped_student(x)
        return skt_loss(features, target)

    before = float(loss().detach())
    for _ in range(5):
        optimizer.zero_grad()
        (DEFAULT_SKT_WEIGHT * loss()).backward()
        optimizer.step()
    assert float(loss().detach()) < before
