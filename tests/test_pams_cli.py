"""`bitfx compile --passes pams --lowering qdq`: the issue's end-to-end command."""

import json

from bitfx.cli import main


def test_compile_edsr_with_pams_and_qdq(tmp_path, capsys):
    report_path = tmp_path / "r.json"
    args = ["compile", "bitfx.zoo:edsr_lite", "--passes", "pams(placement=general)"]
    args += ["--data", "bitfx.zoo:random", "--lowering", "qdq"]
    code = main([*args, "-o", str(tmp_path / "m.onnx"), "--report", str(report_path)])
    printed = capsys.readouterr().out
    report = json.loads(report_path.read_text())
    assert code == 0
    assert report["verify"]["ok"] is True and report["verify"]["max_code_diff"] <= 1
    assert "criterion" in report["verify"] and len(report["verify"]["quantizers"]) == 16
    fusion = report["onnxruntime"]["quantized_layers"]
    assert fusion == {
        "quantized_convs": 10,
        "fused_convs": 10,
        "quantized_matmuls": 0,
        "fused_matmuls": 0,
        "all_fused": True,
    }
    assert report["onnxruntime"]["optimized_ops"]["com.microsoft.QLinearConv"] == 10
    assert "10 of 10 quantized convs" in printed and "verify: 16 quantizers" in printed
    assert report["passes"][0]["stats"]["calibration"] == "2 samples from the calibration data"


def test_float_lowering_reports_no_quantized_layers(tmp_path):
    report_path = tmp_path / "r.json"
    code = main(
        [
            "compile",
            "bitfx.zoo:vgg_small",
            "--passes",
            "fuse_bn",
            "-o",
            str(tmp_path / "m.onnx"),
            "--report",
            str(report_path),
        ]
    )
    report = json.loads(report_path.read_text())
    assert code == 0 and report["verify"]["ok"] is True and "criterion" not in report["verify"]
    assert report["onnxruntime"]["quantized_layers"]["quantized_convs"] == 0
