"""Turn a `Graph` into the `Program` the executor runs (program.py): check every op is supported
(one error lists all that are not), find the fusions (fusion.py), insert packing where a binary
layer reads float data, order the steps, and choose which float values live channels-last
(layout.py)."""

from __future__ import annotations

from collections import Counter, defaultdict

from bitfx.backends.packed.conv1d import convolutions_1d_as_2d
from bitfx.backends.packed.errors import PackedModelError
from bitfx.backends.packed.fusion import (
    EpilogueFusion,
    ThresholdChain,
    binarizes,
    find_conv_pool,
    find_epilogue,
    find_threshold_chain,
    is_binary,
    merged_layout,
    reader_layout,
)
from bitfx.backends.packed.graph import Graph, Node
from bitfx.backends.packed.int8_conv import int8_refusal
from bitfx.backends.packed.kernel_steps import (
    BinaryConvStep,
    BinaryGemmFloatStep,
    BinaryMaxPoolStep,
    FloatConvStep,
    FloatGemmStep,
    FloatMaxPoolStep,
    PackStep,
    binary_constants,
    binary_conv_kernel,
    binary_float_conv,
    conv_factory,
    float_gemm,
    global_avgpool_step,
)
from bitfx.backends.packed.kernels import BinaryConv
from bitfx.backends.packed.layout import choose_channels_last
from bitfx.backends.packed.numpy_ops import NUMPY_OPS
from bitfx.backends.packed.program import CompileReport, Epilogue, PackedLayout, Program
from bitfx.backends.packed.steps import Step
from bitfx.backends.packed.validate import check_graph
from bitfx.format import BINARY_GEMM, BINARY_OPS, DOMAIN, qualified

NATIVE_FUNCTIONS = frozenset((DOMAIN, op) for op in BINARY_OPS)
KERNEL_OPS = ("Conv", "MaxPool", *(qualified(op) for op in BINARY_OPS))


def supported_ops() -> list[str]:
    """Every op type the packed runtime runs."""
    return sorted({*NUMPY_OPS, *KERNEL_OPS})


def compile_graph(
    graph: Graph,
    int8_range: tuple[float, float] | None = None,
    int8_marked: dict[str, tuple[float, float]] | None = None,
    *,
    channels_last: bool = True,
) -> Program:
    """The program for `graph`; with `int8_range` (the model input's quantization range) every
    float Conv that reads a model input and that the int8 kernel can run (int8_conv.py) runs on it;
    with `int8_marked` ({Conv name: its input's range}, the file's marker) every named one it can run;
    `channels_last=False` keeps every float value NCHW (layout.py otherwise chooses)."""
    _check_supported(graph)
    unsafe = check_graph(graph)
    if unsafe:
        raise PackedModelError("the packed runtime refuses this model:\n  " + "\n  ".join(unsafe))
    convolutions_1d_as_2d(graph)
    readers_of = graph.consumers()
    report = CompileReport(ops=dict(Counter(n.qualified for n in graph.nodes)))
    problems: list[str] = []
    kernels: dict[str, BinaryConv] = {}
    for node in graph.nodes:
        if binarizes(node):
            try:
                kernels[node.name] = binary_conv_kernel(node, graph)
            except PackedModelError as error:
                problems.append(str(error))
    chains = _threshold_chains(graph, kernels, readers_of)
    absorbed = {n.name for chain in chains.values() for n in chain.nodes}
    epilogues = _epilogues(graph, chains, absorbed, readers_of)
    absorbed |= {n.name for fusion in epilogues.values() for n in fusion.nodes}
    pools = _conv_pools(graph, epilogues, absorbed, readers_of)
    absorbed |= {pool.name for pool in pools.values()}
    int8 = _int8_convs(graph, epilogues, absorbed, report, int8_range, int8_marked)
    packed_inputs = {chain.end: f"{chain.end}::packed" for chain in chains.values()}
    packs = _pack_plans(graph, packed_inputs)

    at: dict[str, list[Step]] = defaultdict(list)  # steps to emit at a node's position
    for node in graph.nodes:
        if node.name in absorbed or (binarizes(node) and node.name not in kernels):
            continue  # a binary layer whose kernel could not be prepared is already among the problems
        try:
            node_int8 = int8.get(node.name)
            anchor, steps = _steps_for(node, graph, kernels, chains, epilogues, pools, packs, packed_inputs, node_int8)
        except PackedModelError as error:
            problems.append(str(error))
            continue
        at[anchor].extend(steps)
    if problems:
        raise PackedModelError("the packed runtime cannot run this model:\n  " + "\n  ".join(problems))

    ordered, emitted_packs = [], set()
    for node in graph.nodes:
        for step in at.get(node.name, []):
            for name in step.inputs:
                pack = packs.get(name)
                if pack is not None and name not in emitted_packs:
                    ordered.append(pack)
                    emitted_packs.add(name)
            ordered.append(step)
    if channels_last:
        report.channels_last, report.channels_first = choose_channels_last(ordered)
    report.binary_layers = sum(is_binary(n) for n in graph.nodes)
    report.packed_outputs = len(chains)
    report.packed_max_pools = sum(chain.pool is not None for chain in chains.values())
    report.packs = len(emitted_packs)
    report.fused_epilogues = len(epilogues)
    report.fused_max_pools = len(pools)
    report.absorbed_nodes = len(absorbed)
    return Program(ordered, graph, report)


def _check_supported(graph: Graph) -> None:
    known = set(supported_ops())
    unsupported: dict[str, list[str]] = defaultdict(list)
    for node in graph.nodes:
        if node.qualified not in known:
            unsupported[node.qualified].append(node.name)
    if unsupported:
        lines = [f"{op} ({len(names)}×, e.g. node {names[0]!r})" for op, names in sorted(unsupported.items())]
        raise PackedModelError(
            f"the packed runtime does not support {len(unsupported)} op type(s) in this model: {'; '.join(lines)}. "
            "Run it with onnxruntime, or rewrite those layers into supported ops "
            "(bitfx.backends.packed.supported_ops() lists them)"
        )


def _threshold_chains(
    graph: Graph, kernels: dict[str, BinaryConv], readers_of: dict[str, list[Node]]
) -> dict[str, ThresholdChain]:
    chains = {}
    for node in graph.nodes:
        if node.name in kernels:
            chain = find_threshold_chain(node, kernels[node.name], graph, readers_of)
            if chain is not None:
                kernels[node.name].set_packed_output(chain.threshold, chain.flip)
                chains[node.name] = chain
    return chains


def _epilogues(
    graph: Graph, chains: dict[str, ThresholdChain], absorbed: set[str], readers_of: dict[str, list[Node]]
) -> dict[str, EpilogueFusion]:
    fusions = {}
    for node in graph.nodes:
        if node.name in chains or node.name in absorbed or not (node.qualified == "Conv" or is_binary(node)):
            continue
        fusion = find_epilogue(node, graph, readers_of)
        if fusion is not None and not any(n.name in absorbed for n in fusion.nodes):
            fusions[node.name] = fusion
            absorbed |= {n.name for n in fusion.nodes}
    return fusions


def _int8_convs(
    graph: Graph,
    epilogues: dict[str, EpilogueFusion],
    absorbed: set[str],
    report: CompileReport,
    int8_range: tuple[float, float] | None,
    marked: dict[str, tuple[float, float]] | None,
) -> dict[str, tuple[float, float]]:
    """The float Convs that run on the int8 kernel, with their input's range: with `int8_range` those
    reading a model input, else those `marked` names. The float Convs kept float are listed in
    report.int8_skipped with the reason; the chosen ones in report.int8_nodes."""
    if int8_range is None and marked is None:
        return {}
    from_marker = int8_range is None
    source = "the file's marker" if from_marker else "the range passed to load"
    chosen = {}
    for node in graph.nodes:
        if node.qualified != "Conv":
            continue
        if node.name in absorbed:
            if from_marker and node.name in marked:
                report.int8_skipped.append(f"{node.describe()}: it is fused into another step")
            continue
        if from_marker:
            value_range = marked.get(node.name)
            refusal = None if value_range else "the file's int8 marker does not name it"
        else:
            value_range = int8_range
            refusal = None if node.inputs[0] in graph.inputs else "it reads no model input (its input range is unknown)"
        if refusal is None:
            fusion = epilogues.get(node.name)
            refusal = int8_refusal(
                graph.constant(node.inputs[1]),
                node.attr("group", 1),
                tuple(node.attr("dilations") or (1, 1)),
                fusion is not None and fusion.epilogue.residual is not None,
            )
        if refusal is None:
            chosen[node.name] = value_range
            low, high = value_range
            report.int8_nodes.append(f"{node.describe()}: input range [{low:g}, {high:g}] ({source})")
        else:
            report.int8_skipped.append(f"{node.describe()}: {refusal}")
    report.int8_convs = len(chosen)
    return chosen


def _conv_pools(
    graph: Graph, epilogues: dict[str, EpilogueFusion], absorbed: set[str], readers_of: dict[str, list[Node]]
) -> dict[str, Node]:
    """The MaxPool each float Conv runs in the same pass (fusion.find_conv_pool), by the Conv's name."""
    pools = {}
    for node in graph.nodes:
        if node.name not in absorbed:
            pool = find_conv_pool(node, epilogues.get(node.name), graph, readers_of)
            if pool is not None and pool.name not in absorbed:
                pools[node.name] = pool
    return pools


def _pack_plans(graph: Graph, packed_inputs: dict[str, str]) -> dict[str, PackStep]:
    """One PackStep per (float value, layout) that binarizing readers need, named by its output."""
    wanted: dict[tuple[str, int, int], list[PackedLayout]] = defaultdict(list)
    for node in graph.nodes:
        if binarizes(node) and node.inputs[0] not in packed_inputs:
            layout = reader_layout(node)
            wanted[(node.inputs[0], layout.groups, layout.pad)].append(layout)
    plans = {}
    for (value, groups, pad), layouts in wanted.items():
        name = packed_name(value, groups, pad)
        plans[name] = PackStep(f"pack {value!r}", value, name, merged_layout(layouts))
    return plans


def packed_name(value: str, groups: int, pad: int) -> str:
    return f"{value}::packed(groups={groups},pad={pad:+d})"


def _steps_for(
    node: Node,
    graph: Graph,
    kernels: dict[str, BinaryConv],
    chains: dict[str, ThresholdChain],
    epilogues: dict[str, EpilogueFusion],
    pools: dict[str, Node],
    packs: dict[str, PackStep],
    packed_inputs: dict[str, str],
    int8_range: tuple[float, float] | None = None,
) -> tuple[str, list[Step]]:
    """(the node whose position the steps take, the steps) for one node that is not absorbed."""
    fusion = epilogues.get(node.name)
    epilogue = fusion.epilogue if fusion else Epilogue()
    output = fusion.output if fusion else node.outputs[0]
    anchor = fusion.nodes[-1].name if fusion else node.name
    name = node.describe() + (f" + {', '.join(epilogue.fused)}" if epilogue.fused else "")
    if node.qualified == "Conv":
        make, kernel = conv_factory(node, graph, int8_range)
        if int8_range is not None:
            name += " [int8]"
        pool = pools.get(node.name)
        if pool is not None:
            name, output, anchor = f"{name} + {pool.name}", pool.outputs[0], pool.name
        return anchor, [FloatConvStep(name, node.inputs[0], output, make, node, kernel, epilogue, pool)]
    if node.qualified == "MaxPool":
        return anchor, [FloatMaxPoolStep(node)]
    if node.qualified == "Gemm" and (gemm_kernel := float_gemm(node, graph)) is not None:
        return anchor, [FloatGemmStep(node, gemm_kernel)]
    if (pool_step := global_avgpool_step(node, graph)) is not None:
        return anchor, [pool_step]
    if not is_binary(node):
        return anchor, [NUMPY_OPS[node.op_type](node, graph)]
    if not binarizes(node):
        if node.op_type == BINARY_GEMM:
            weights, scale, bias = binary_constants(node, graph)
            return anchor, [BinaryGemmFloatStep(node, weights, scale, bias, epilogue, output)]
        make, kernel = binary_float_conv(node, graph)
        return anchor, [FloatConvStep(name, node.inputs[0], output, make, node, kernel, epilogue)]
    x = node.inputs[0]
    layout = reader_layout(node)
    source = packed_inputs.get(x) or packed_name(x, layout.groups, layout.pad)
    gemm = node.op_type == BINARY_GEMM
    chain = chains.get(node.name)
    if chain is None:
        return anchor, [BinaryConvStep(name, source, output, kernels[node.name], gemm=gemm, epilogue=epilogue)]
    if chain.pool is None:
        return anchor, [
            BinaryConvStep(
                name,
                source,
                packed_inputs[chain.end],
                kernels[node.name],
                gemm=gemm,
                epilogue=epilogue,
                packed_out=chain.layout,
            )
        ]
    before_pool = f"{chain.pool.inputs[0]}::packed"
    steps = [
        BinaryConvStep(
            name + f" → packed via {len(chain.nodes)} node(s)",
            source,
            before_pool,
            kernels[node.name],
            gemm=gemm,
            epilogue=epilogue,
            packed_out=chain.pool_layout(),
        ),
        BinaryMaxPoolStep(chain.pool, before_pool, packed_inputs[chain.end], chain.layout),
    ]
    return anchor, steps
