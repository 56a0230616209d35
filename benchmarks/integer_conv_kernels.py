"""onnxruntime's convolution kernels on ±1 data, one layer at a time: the measurements behind the
`int8` lowering of binary layers (docs/binarization.md).

For each 3×3 conv shape of ResNet-18 (batch 1): float `Conv`, `ConvInteger` with uint8
activations and uint8 weights (what the `int8` lowering writes) or int8 weights, and
`QLinearConv` (8-bit output, which cannot hold an exact binary sum; for comparison only).
Single-node models, timed round-robin in one run.

    python benchmarks/integer_conv_kernels.py [--threads 1] [--repeats 50] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
from binary_int8 import interleaved_median_ms
from onnx import TensorProto, helper, numpy_helper

from bitfx.backends.onnx import run_session, session
from bitfx.ir.table import format_table

SHAPES = ((64, 56), (128, 28), (256, 14), (512, 7))  # channels, side


def _model(
    op: str,
    x_type: int,
    inputs: list[str],
    initializers: list[onnx.TensorProto],
    channels: int,
    side: int,
    out_type: int,
) -> onnx.ModelProto:
    node = helper.make_node(op, inputs, ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    graph = helper.make_graph(
        [node],
        op,
        [helper.make_tensor_value_info("x", x_type, [1, channels, side, side])],
        [helper.make_tensor_value_info("y", out_type, None)],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def variants(channels: int, side: int, rng: np.random.Generator) -> dict[str, tuple[onnx.ModelProto, np.ndarray]]:
    signs = rng.choice([-1, 1], size=(channels, channels, 3, 3))
    codes = (rng.choice([-1, 1], size=(1, channels, side, side)) + 2).astype(np.uint8)  # 1 and 3, zero point 2
    zero = numpy_helper.from_array(np.array(2, np.uint8), "x_zero")
    one = numpy_helper.from_array(np.array(1.0, np.float32), "one")
    w_float = numpy_helper.from_array(signs.astype(np.float32), "w")
    w_uint8 = numpy_helper.from_array((signs + 1).astype(np.uint8), "w")
    w_int8 = numpy_helper.from_array(signs.astype(np.int8), "w")
    w_zero_uint8 = numpy_helper.from_array(np.array(1, np.uint8), "w_zero")
    w_zero_int8 = numpy_helper.from_array(np.array(0, np.int8), "w_zero")
    y_scale = numpy_helper.from_array(np.array(40.0, np.float32), "y_scale")
    y_zero = numpy_helper.from_array(np.array(128, np.uint8), "y_zero")
    qlinear_inputs = ["x", "one", "x_zero", "w", "one", "w_zero", "y_scale", "y_zero"]
    qlinear_initializers = [w_int8, zero, one, w_zero_int8, y_scale, y_zero]
    return {
        "Conv float32": (
            _model("Conv", TensorProto.FLOAT, ["x", "w"], [w_float], channels, side, TensorProto.FLOAT),
            codes.astype(np.float32) - 2,
        ),
        "ConvInteger u8×u8": (
            _model(
                "ConvInteger",
                TensorProto.UINT8,
                ["x", "w", "x_zero", "w_zero"],
                [w_uint8, zero, w_zero_uint8],
                channels,
                side,
                TensorProto.INT32,
            ),
            codes,
        ),
        "ConvInteger u8×s8": (
            _model(
                "ConvInteger",
                TensorProto.UINT8,
                ["x", "w", "x_zero"],
                [w_int8, zero],
                channels,
                side,
                TensorProto.INT32,
            ),
            codes,
        ),
        "QLinearConv u8×s8→u8": (
            _model(
                "QLinearConv",
                TensorProto.UINT8,
                qlinear_inputs,
                qlinear_initializers,
                channels,
                side,
                TensorProto.UINT8,
            ),
            codes,
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for channels, side in SHAPES:
            models = variants(channels, side, rng)
            runs = []
            for index, (model, x) in enumerate(models.values()):
                path = Path(tmp) / f"{channels}-{index}.onnx"
                onnx.save(model, str(path))
                runs.append(lambda s=session(path, threads=args.threads), x=x: run_session(s, [x]))
            times = interleaved_median_ms(runs, repeats=args.repeats)
            results.append({"channels": channels, "side": side, **dict(zip(models, times, strict=True))})
    load = os.getloadavg()
    print(
        f"batch 1, 3×3 conv, {args.threads} thread(s), median of {args.repeats}; "
        f"load average {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}\n"
    )
    names = list(variants(8, 4, rng))
    print(
        format_table(
            ("shape", *(f"{n} ms" for n in names)),
            [(f"{r['channels']}@{r['side']}×{r['side']}", *(f"{r[n]:.3f}" for n in names)) for r in results],
            (False, *([True] * len(names))),
        )
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"load_average": load, "threads": args.threads, "results": results}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
