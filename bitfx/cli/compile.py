"""`bitfx compile`: capture → pipeline → lowering → verification → report."""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch

from bitfx.backends.onnx import export, load_model, op_counts, optimized_op_counts, quantized_layer_fusion, verifier_for
from bitfx.cli.batches import DataBatches
from bitfx.cli.failures import EXIT_MISMATCH, EXIT_OK
from bitfx.cli.outputs import OutputFiles
from bitfx.cli.specs import build_model, input_shape_of
from bitfx.cli.weights import WEIGHTS_HELP, read_weights
from bitfx.errors import PassConfigError
from bitfx.ir import capture, diff, summary
from bitfx.passes import DumpAfterChange, Pipeline, PrintAfterChange
from bitfx.passes.core.config import check_rtol


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
            "its first batch is the example input; passes read the batches they calibrate on lazily"
        ),
    )
    parser.add_argument("--lowering", default="float", help="lowering style (default: float; styles listed below)")
    parser.add_argument(
        "--int8-float-convs",
        nargs="?",
        const="example",
        type=_int8_range,
        metavar="LOW,HIGH|example",
        help=(
            "mark the float Convs that read the model input as int8-quantizable in the file (the packed runtime "
            "then runs them on its int8 kernel), with this input range (--int8-float-convs=-2.5,2.7), or the "
            "example input's range (example, the default)"
        ),
    )
    parser.add_argument("-o", "--output", required=True, help="the ONNX file to write")
    parser.add_argument("--report", help="write a JSON report here")
    parser.add_argument("--save-pipeline", help="write the pipeline as TOML here, to replay the run")
    parser.add_argument(
        "--no-verify", action="store_true", help="skip running the ONNX file in onnxruntime against torch"
    )
    parser.add_argument(
        "--rtol", type=_tolerance, default=1e-4, help="verification tolerance on the max relative error (default 1e-4)"
    )
    parser.add_argument(
        "--print-after-change", action="store_true", help="print the graph summary after each pass that changed it"
    )
    parser.add_argument(
        "--dump-dir", help="write code, summary and DOT of the graph after each pass that changed it here"
    )


def _tolerance(text: str) -> float:
    try:
        return check_rtol(float(text), "--rtol")
    except (ValueError, PassConfigError) as error:
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number ≥ 0, e.g. 1e-4") from error


def _int8_range(text: str) -> tuple[float, float] | str:
    """LOW,HIGH as two floats, or "example" (the example input's range)."""
    if text == "example":
        return text
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r} is not LOW,HIGH (two numbers), e.g. -2.5,2.7") from error
    return low, high


def run(args: argparse.Namespace) -> int:
    """Run `bitfx compile`: outputs and the pipeline are checked before the model is built, and the
    files are written only when everything succeeded (see `bitfx.cli.outputs`)."""
    outputs = OutputFiles({"-o": args.output, "--report": args.report, "--save-pipeline": args.save_pipeline})
    with outputs:
        ok = _compile(args, outputs)
        outputs.commit()
    print(f"wrote {outputs.target('-o')} ({outputs.target('-o').stat().st_size:,} bytes)")
    return EXIT_OK if ok else EXIT_MISMATCH


def _compile(args: argparse.Namespace, outputs: OutputFiles) -> bool:
    """Everything `bitfx compile` does, writing only to `outputs`' staged files; True when verified."""
    instruments = [PrintAfterChange()] if args.print_after_change else []
    if args.dump_dir:
        instruments.append(DumpAfterChange(args.dump_dir))
    pipeline = (
        Pipeline.from_file(args.pipeline, instruments=instruments)
        if args.pipeline
        else Pipeline.from_spec(args.passes, instruments=instruments)
    )
    model = build_model(args.model)
    trained = read_weights(args.weights, model, args.model) if args.weights else None
    shape = input_shape_of(model, args.input_shape, args.model)
    batches = DataBatches(args.data, shape) if args.data else None
    example = batches.example if batches else torch.randn(shape, generator=torch.Generator().manual_seed(0))
    gm = trained if trained is not None else capture(model, (example,))

    if args.save_pipeline:
        pipeline.save(outputs.staged("--save-pipeline"))
    result = pipeline.run(gm, data=batches)
    print(result)
    print(diff(gm, result.graph_module).overview())

    int8 = example if args.int8_float_convs == "example" else args.int8_float_convs
    path = export(result.graph_module, (example,), outputs.staged("-o"), lowering=args.lowering, int8_float_convs=int8)
    report: dict[str, Any] = {
        "model": args.model,
        "input_shape": list(example.shape),
        "lowering": args.lowering,
        "pipeline": pipeline.to_config(),
        "passes": [record.to_json() for record in result.records],
        "before": summary(gm).totals(),
        "after": summary(result.graph_module).totals(),
        "onnx": {"path": str(outputs.target("-o")), "bytes": path.stat().st_size, "ops": op_counts(load_model(path))},
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
    if args.report:
        outputs.staged("--report").write_text(json.dumps(report, indent=2, default=str) + "\n")
    return ok
