"""The subgraph edits the loop and cell rewrites share, on a real loop model; the edited model still runs."""

from __future__ import annotations

import numpy as np
import pytest
from tflite_models import case

from edge_lstm import tflite_schema as ts
from edge_lstm.lower.tflite import lower
from edge_lstm.quantize import tflite_edit as te

schema = pytest.importorskip("ai_edge_litert.schema_py_generated")


def _run(data: bytes, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=data, num_threads=1)
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    return np.asarray(interp.get_tensor(interp.get_output_details()[0]["index"]))


def test_views_of_each_while_loop() -> None:
    model = ts.unpack(lower(case("stacked").proto, "loop").data)
    loops = te.while_loops(model)
    assert [k for _, k, _ in te.whiles(model)] == [main.index(op) for main, _, _, op in loops]
    main, body, cond, op = loops[0]
    assert main.code(main.index(op)) == schema.BuiltinOperator.WHILE
    assert body.graph is model.subgraphs[op.builtinOptions.bodySubgraphIndex]
    assert cond.graph is model.subgraphs[op.builtinOptions.condSubgraphIndex]
    body.refresh()
    assert all(body.producer[int(t)] < k for k, o in enumerate(body.graph.operators) for t in o.inputs
               if int(t) in body.producer)


def test_an_inserted_copy_reroutes_a_value_and_dead_ops_go() -> None:
    c = case("stacked")
    data = lower(c.proto, "loop").data
    x = c.feeds()[c.model.inputs.names[0]]
    model = ts.unpack(data)
    main = te.SubgraphView(model, model.subgraphs[0])
    main.refresh()
    src = int(main.graph.inputs[0])
    first_reader = min(main.consumers[src])
    # a RESHAPE copy of the input, and every reader reads the copy
    copy = main.add_tensor(main.tensor(src), ts.FLOAT32, suffix="_copy")
    main.add_op(0, schema.BuiltinOperator.RESHAPE, [src], [copy])
    for op in main.graph.operators[1:]:
        te.replace_input(op, src, copy)
    # a dead op: a second copy nobody reads
    dead = main.add_tensor(main.tensor(src), ts.FLOAT32, suffix="_dead")
    main.add_op(1, schema.BuiltinOperator.RESHAPE, [src], [dead])
    ops = len(main.graph.operators)
    te.drop_dead(main)
    assert len(main.graph.operators) == ops - 1 and main.consumers[copy] == [first_reader + 1]
    edited = ts.pack(te.drop_unused_buffers(model))
    np.testing.assert_array_equal(_run(edited, x), _run(data, x))


def test_slots_and_uses_and_scales() -> None:
    assert te.with_slot([4, 5, 6], 1, 9) == [4, 9, 6]
    model = ts.unpack(lower(case("stacked").proto, "fused").data)
    main = te.SubgraphView(model, model.subgraphs[0])
    out = int(main.graph.outputs[0])
    other = main.add_tensor(main.tensor(out), ts.FLOAT32, suffix="_alias")
    te.replace_uses(main, out, other)
    assert int(main.graph.outputs[0]) == other
    a, b = ts.quantization([0.1], [2]), ts.quantization([0.1 * (1 + 1e-8)], [2])
    assert te.same_quantization(a, b) and not te.same_quantization(a, ts.quantization([0.1], [3]))
    assert not te.same_quantization(a, None) and not te.same_quantization(ts.quantization([0.1, 0.2], [0, 0]), a)
