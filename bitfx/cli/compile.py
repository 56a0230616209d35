"""`bitfx compile`: capture → pipeline → lowering → verification → report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from bitfx.backends.onnx import export, load_model, op_counts, optimized_op_counts, quantized_layer_fusion, verifier_for
from bitfx.cli.specs import build_model, first_input, input_shape_of, load_batches
from bitfx.cli.weights import WEIGHTS_HELP, read_weights
from bitfx.ir import capture, diff, summary
from bitfx.passes import DumpAfterChange, Pipeline, PrintAfterChange


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model factory as package.module:function, e.g. bitfx.zoo:resnet20")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--passes", help="pass list, e.g. 'fuse_bn,binarize(scheme=xnor)' (passes listed below)")
    source.add_argument("--pipeline", help="TOML pipeline file (see `bitfx compile --save-pipeline`)")
    parser.add_argument("--weights", help=WEIGHTS_HELP)
    parser.add_argument("--input-shape", help="N,C,H,W of the example input (default: the model's example_input_shape)")
    parser.add_argument(
        "--data",
        help=(
            "data function package.module:function; "
            "its first batch is the example input and passes calibrate on all batches"
        ),
    )
    parser.add_argument("--lowering", default="float", help="lowering style (default: float; styles listed below)")
    parser.add_argument("-o", "--output", required=True, help="the ONNX file to write")
    parser.add_argument("--report", help="write a JSON report here")
    parser.add_argument("--save-pipeline", help="write the pipeline as TOML here, to replay the run")
    parser.add_argument(
        "--no-verify", action="store_true", help="skip running the ONNX file in onnxruntime against torch"
    )
    parser.add_argument(
        "--rtol", type=float, default=1e-4, help="verification tolerance on the max relative error (default 1e-4)"
    )
    parser.add_argument(
        "--print-after-change", action="store_true", help="print the graph summary after each pass that changed it"
    )
    parser.add_argument(
        "--dump-dir", help="write code, summary and DOT of the graph after each pass that changed it here"
    )


def run(args: argparse.Namespace) -> int:
    model = build_model(args.model)
    trained = read_weights(args.weights, model, args.model) if args.weights else None
    shape = input_shape_of(model, args.input_shape, args.model)
    batches = load_batches(args.data, shape) if args.data else None
    example = first_input(batches[0]) if batches else torch.randn(shape, generator=torch.Generator().manual_seed(0))
    gm = trained if trained is not None else capture(model, (example,))

    instruments = [PrintAfterChange()] if args.print_after_change else []
    if args.dump_dir:
        instruments.append(DumpAfterChange(args.dump_dir))
    pipeline = (
        Pipeline.from_file(args.pipeline, instruments=instruments)
        if args.pipeline
        else Pipeline.from_spec(args.passes, instruments=instruments)
    )
    if args.save_pipeline:
        pipeline.save(args.save_pipeline)
    result = pipeline.run(gm, data=batches)
    print(result)
    print(diff(gm, result.graph_module).overview())

    path = export(result.graph_module, (example,), args.output, lowering=args.lowering)
    report: dict[str, Any] = {
        "model": args.model,
        "input_shape": list(example.shape),
        "lowering": args.lowering,
        "pipeline": pipeline.to_config(),
        "passes": [record.to_json() for record in result.records],
        "before": summary(gm).totals(),
        "after": summary(result.graph_module).totals(),
        "onnx": {"path": str(path), "bytes": path.stat().st_size, "ops": op_counts(load_model(path))},
    }
    optimized_ops = optimized_op_counts(path)
    fusion = quantized_layer_fusion(path, optimized_ops)
    report["onnxruntime"] = {"optimized_ops": optimized_ops, "quantized_layers": fusion}
    if fusion["quantized_convs"] or fusion["quantized_matmuls"]:
        print(
            f"onnxruntime: {fusion['fused_convs']} of {fusion['quantized_convs']} quantized convs "
            f"and {fusion['fused_matmuls']} of {fusion['quantized_matmuls']} quantized matrix products "
            "run as integer kernels"
        )
    ok = True
    if not args.no_verify:
        check = verifier_for(args.lowering)(path, result.graph_module, (example,), rtol=args.rtol)
        report["verify"] = check.to_json()
        ok = check.ok
        print(f"verify: {check.describe()}")
    print(f"wrote {path} ({report['onnx']['bytes']:,} bytes)")
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0 if ok else 1
