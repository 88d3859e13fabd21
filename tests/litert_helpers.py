"""Running a TFLite file on LiteRT window by window, as the quantization tests compare cells."""

from __future__ import annotations

import numpy as np


def first_outputs(data: bytes, xs: np.ndarray) -> np.ndarray:
    """The first output element of each window in ``xs`` on LiteRT (XNNPACK on, as LiteRT ships; one thread), the
    state reset before each window."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=data, num_threads=1)
    interp.allocate_tensors()
    i, o = interp.get_input_details()[0], interp.get_output_details()[0]
    out = []
    for x in xs:
        interp.reset_all_variables()
        interp.set_tensor(i["index"], x[None].astype(np.float32))
        interp.invoke()
        out.append(interp.get_tensor(o["index"]).ravel()[0])
    return np.array(out)
