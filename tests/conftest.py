import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Each xdist worker gets one core; torch's default of one thread per core would
    # oversubscribe the machine and make every op wait on the others.
    torch.set_num_threads(1)

# Tests that take more than about 5 s (measured with -n 2), marked `slow` so that `./dev quick`
# (`pytest -m "not slow"`) stays under two minutes; `./dev test` and CI run them all. For a
# parametrized test the listed cases are slow; the cheaper models keep covering the property
# in the quick run. A new slow test can also carry `@pytest.mark.slow` itself.
SLOW = {
    "test_binary_lowering.py::test_every_model_matches_torch_in_every_lowering": {
        f"{model}-{style}"
        for model in ("resnet56", "resnet18", "mobilenet_v2", "densenet_tiny")
        for style in ("float", "custom", "int8")
    },
    "test_cli.py::test_compile_every_model": {"resnet18", "resnet56", "mobilenet_v2", "densenet_tiny", "vgg_small"},
    "test_cli.py::test_compile_with_data": {"bitfx.zoo:digits-64"},
    "test_rank_prune_cli.py::test_done_when_commands_prune_to_at_most_60_percent_of_the_macs": {
        "mobilenet_v2",
        "resnet56",
    },
    "test_onnx_backend.py::test_export_checks_and_verifies_with_dynamic_batch": {
        "resnet56",
        "mobilenet_v2",
        "resnet18",
    },
    "test_packed_executor.py::test_every_example_model_matches_onnxruntime_on_the_same_file": {
        "resnet56",
        "mobilenet_v2",
        "densenet_tiny",
    },
    "test_rotation_distributed.py::test_every_rank_holds_rank_zeros_rotations_after_each_update": None,
    "test_pams_distributed.py::test_two_ranks_calibrate_like_one_process_over_all_the_data": None,
    "test_feature_rank_distributed.py::test_two_processes_agree_with_one_process_over_all_the_data": None,
    "test_pams_sr_example.py::test_train_quantize_finetune_and_score_in_onnxruntime": None,
    "test_integer_lowering.py::test_every_model_is_exact_layer_by_layer_and_every_binary_conv_fused": {
        "resnet56",
        "resnet18",
        "mobilenet_v2",
        "densenet_tiny",
    },
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        test = f"{item.path.name}::{item.originalname}"
        if test not in SLOW:
            continue
        cases = SLOW[test]
        callspec = getattr(item, "callspec", None)
        if cases is None or (callspec is not None and callspec.id in cases):
            item.add_marker(pytest.mark.slow)
