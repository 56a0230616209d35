"""The whole bitfx path on real data, in one run: train → capture → passes → ONNX → onnxruntime.

Trains the CIFAR ResNet-20 of the model zoo for a few epochs on scikit-learn's bundled
handwritten digits (no download), captures it, folds its BatchNorms with a pipeline, lowers
it to ONNX, checks onnxruntime against torch and prints the report.

    python -m examples.demo [--epochs 3] [--out build/demo]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from bitfx.backends.onnx import export, load_model, op_counts, run_session, session, verify
from bitfx.ir import capture, diff, summary
from bitfx.passes import Pipeline
from bitfx.zoo import digits, resnet20
from examples.timing import median_ms
from examples.training import accuracy, train_classifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", default="build/demo", help="directory for the ONNX file, pipeline and report")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)

    shape = (1, 3, 32, 32)
    train, test = digits(shape, split="train"), digits(shape, split="test")
    model = train_classifier(resnet20(), train, epochs=args.epochs)
    example = test[0][0][:8]

    gm = capture(model, (example,))
    pipeline = Pipeline.from_spec("fuse_bn")
    result = pipeline.run(gm)
    pipeline.save(out / "pipeline.toml")
    print("== model after the pipeline ==")
    print(summary(result.graph_module))
    print("\n== what the pipeline changed ==")
    print(diff(gm, result.graph_module).overview())
    print("\n== passes ==")
    print(result)

    onnx_path = export(result.graph_module, (example,), out / "resnet20_digits.onnx")
    check = verify(onnx_path, result.graph_module, (test[1][0],))
    ort_session = session(onnx_path)
    report = {
        "model": "bitfx.zoo:resnet20 trained on bitfx.zoo:digits",
        "passes": [record.to_json() for record in result.records],
        "before": summary(gm).totals(),
        "after": summary(result.graph_module).totals(),
        "accuracy": {
            "torch_float": accuracy(model, test),
            "torch_after_passes": accuracy(result.graph_module, test),
            "onnxruntime": accuracy(lambda x: run_session(ort_session, [x.numpy()])[0], test),
        },
        "latency_ms_batch1": _latencies(model, ort_session, example[:1]),
        "verify": check.to_json(),
        "onnx": {"path": str(onnx_path), "bytes": onnx_path.stat().st_size, "ops": op_counts(load_model(onnx_path))},
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print("\n== report ==")
    print(json.dumps(report, indent=2))
    print(f"\nverify {'ok' if check.ok else 'FAILED'}; files in {out}/")


def _latencies(model: torch.nn.Module, ort_session: object, x: torch.Tensor) -> dict[str, float]:
    """Median batch-1 latency of torch eager and onnxruntime on the same input, same run."""
    with torch.no_grad():
        torch_ms = median_ms(lambda: model(x), repeats=50)
    ort_ms = median_ms(lambda: run_session(ort_session, [x.numpy()]), repeats=50)
    return {"torch": torch_ms, "onnxruntime": ort_ms, "onnxruntime_speedup": torch_ms / ort_ms}


if __name__ == "__main__":
    main()
