"""A tiny run of every step of examples/pams_sr.py (the real run takes minutes)."""

import torch

from bitfx.ir import capture
from bitfx.zoo import edsr_lite
from bitfx.zoo.sr_data import SRPair, load_pairs
from examples.pams_sr import SCALE, finetune, onnx_psnr, quantize, tail_input, torch_psnr, train_float


def test_train_quantize_finetune_and_score_in_onnxruntime(tmp_path):
    (photo,) = load_pairs(("chelsea.png",), SCALE)
    small = SRPair("crop", photo.hr[:, :64, :64], photo.lr[:, :32, :32])
    torch.manual_seed(0)
    model = train_float(edsr_lite(scale=SCALE), [photo], steps=2, seed=0)
    teacher = capture(model, small.lr.unsqueeze(0))
    assert tail_input(teacher) == "add_4"
    student = quantize(teacher, 4, "paper", [photo], seed=0)
    before = [p.detach().clone() for p in student.parameters()]
    student = finetune(teacher, student, [photo], steps=2, seed=0)
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters()))
    onnx_scores, fusion = onnx_psnr(student, [small], tmp_path, "tiny")
    assert fusion["quantized_convs"] == 8 and fusion["fused_convs"] == 4  # conv1 of each block reads float input
    assert abs(onnx_scores[0] - torch_psnr(student, [small])[0]) < 0.05
