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
