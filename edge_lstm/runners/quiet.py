"""Keep the runtimes' own chatter out of edge-lstm's output, never their errors.

LiteRT / tflite-runtime's C++ logger writes ``INFO: Created TensorFlow Lite XNNPACK delegate for CPU.`` on
file descriptor 2 when the first interpreter of a process allocates its tensors. Python's ``sys.stderr`` never
sees it, so :func:`native_stderr_without` redirects the descriptor itself around the call, then writes back
everything it caught except the exact lines in :data:`NATIVE_NOISE`: an error the library prints there still
reaches the user, only later (when the call returns).

Device-side (shipped with the runners to a device): only the standard library.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator

#: lines of native stderr that carry no information for a user (matched whole, after the line ending)
NATIVE_NOISE: tuple[bytes, ...] = (b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",)


def drop_lines(data: bytes, noise: tuple[bytes, ...] = NATIVE_NOISE) -> bytes:
    """``data`` without the lines that are exactly one of ``noise`` (everything else kept, in order)."""
    return b"".join(line for line in data.splitlines(keepends=True) if line.rstrip(b"\r\n") not in noise)


@contextlib.contextmanager
def native_stderr_without(noise: tuple[bytes, ...] = NATIVE_NOISE) -> Iterator[None]:
    """Catch what native code writes on file descriptor 2 inside the block; on leaving, write it back without the
    ``noise`` lines. Without a usable descriptor 2 the block just runs."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    with tempfile.TemporaryFile() as caught:
        try:
            os.dup2(caught.fileno(), 2)
            yield
        finally:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            kept = drop_lines(caught.read(), noise)
            if kept:
                with contextlib.suppress(OSError):
                    os.write(2, kept)


def settle_litert_log() -> None:
    """Let this process's first LiteRT interpreter print its one-time delegate line into :func:`native_stderr_without`.

    The line is logged once per process (TFLite's "log once" macro), by whichever interpreter allocates first. The
    export quantizes and calibrates through LiteRT interpreters of its own in the main process; allocating a one-op
    model here first, inside the filter, keeps the line out of every later one. Without ai-edge-litert (a device
    with tflite-runtime only, which runs in the runners, already filtered) this does nothing.
    """
    try:
        import flatbuffers
        from ai_edge_litert import schema_py_generated as s
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        return
    t = [s.TensorT() for _ in range(3)]
    for k, tensor in enumerate(t):
        tensor.shape, tensor.type, tensor.buffer, tensor.name = [1], s.TensorType.FLOAT32, 0, f"t{k}"
    op = s.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 1], [2]
    g = s.SubGraphT()
    g.tensors, g.inputs, g.outputs, g.operators = t, [0, 1], [2], [op]
    code = s.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = s.BuiltinOperator.ADD
    code.version = 1
    m = s.ModelT()
    m.version, m.operatorCodes, m.subgraphs, m.buffers = 3, [code], [g], [s.BufferT()]
    b = flatbuffers.Builder(256)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    with native_stderr_without(), contextlib.suppress(ValueError, RuntimeError):
        Interpreter(model_content=bytes(b.Output())).allocate_tensors()
