"""The runtime under the predictor: one artifact of a bundle, stepped with as little Python as possible.

The runners in :mod:`edge_lstm.runners` check every feed against the specs and
time each call, which is right for validation and profiling; on a sensor the
predictor calls the model once per reading, so this engine does only what a
step needs: quantize the readings when the input is integer, set the input,
carry the explicit state (outputs fed back to inputs, requantized only when
their scales differ), invoke, dequantize the forecast. The tensor indices,
dtypes, shapes and quantization come from the bundle's manifest and are checked
once against what the runtime reports when the model is loaded.

Runtimes: ``litert`` (ai-edge-litert), ``tflite-runtime`` (what Raspberry Pi
images ship, with ``numpy<2``) and ``onnxruntime``, each imported only when
chosen. Python 3.9 compatible.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import numpy as np

from edge_lstm import registry
from edge_lstm.errors import InputFileError, UsageError
from edge_lstm.runners.quant_io import dequantize_output, quantize_input
from edge_lstm.runners.quiet import native_stderr_without

#: the runtimes predict runs, in the order ``auto`` tries them
RUNTIMES = ("litert", "tflite-runtime", "onnxruntime")
#: runtime -> the module whose Interpreter / InferenceSession runs the artifact (the registry's first)
MODULES = {n: registry.runtime(n).modules[0] for n in RUNTIMES}
#: runtime -> the package a user installs for it (the registry's first)
PACKAGES = {n: registry.runtime(n).packages[0] for n in RUNTIMES}


def installed(runtime: str) -> bool:
    """True when ``runtime``'s package is importable here (found, not imported)."""
    return importlib.util.find_spec(MODULES[runtime].split(".")[0]) is not None


def installed_runtimes() -> list[str]:
    """The runtimes installed here, in the order ``--runtime auto`` prefers them."""
    return [r for r in RUNTIMES if installed(r)]


def runtime_version(runtime: str) -> str:
    """``tflite-runtime 2.14.0``: the installed package's version."""
    try:
        from importlib.metadata import version

        return f"{PACKAGES[runtime]} {version(PACKAGES[runtime])}"
    except Exception:  # metadata can be missing in a zipapp or an odd install
        return f"{PACKAGES[runtime]} unknown"


def _zeros(t: dict[str, Any]) -> np.ndarray:
    """A state tensor's initial value in its own dtype (the zero point for an integer tensor with a scale)."""
    shape = tuple(d if isinstance(d, int) and d > 0 else 1 for d in t["shape"])
    q = t.get("quantization")
    return np.full(shape, q["zero_point"] if q else 0, dtype=np.dtype(t["dtype"]))


def _requant(arr: np.ndarray, src: dict[str, Any] | None, dst: dict[str, Any] | None, dtype: str) -> np.ndarray:
    """A state output fed to its input: unchanged when both sides are alike, else through float."""
    if src == dst:
        return arr
    real = dequantize_output(arr, src["scale"], src["zero_point"]) if src else arr.astype(np.float32)
    return quantize_input(real, dtype, dst["scale"], dst["zero_point"]) if dst else real.astype(dtype)


class Engine:
    """Runs one artifact: :meth:`step` takes the readings input as float32 and returns the forecast output."""

    runtime: str = ""

    def __init__(self, art: dict[str, Any]) -> None:
        self.art = art
        self.x = next(t for t in art["inputs"] if t["role"] == "readings")
        self.y = next(t for t in art["outputs"] if t["role"] == "forecast")
        self.x_shape = tuple(d if isinstance(d, int) and d > 0 else 1 for d in self.x["shape"])
        self.pairs = [t for t in art["state"]["tensors"] if t["input"] and t["output"]]
        by_in = {t["name"]: t for t in art["inputs"]}
        by_out = {t["name"]: t for t in art["outputs"]}
        #: (input spec, output spec) of every explicitly carried state
        self.links = [(by_in[p["input"]], by_out[p["output"]]) for p in self.pairs]
        self.others = [t for t in art["inputs"] if t["role"] == "other"]
        self.version = ""

    def prepare_x(self, values: np.ndarray) -> np.ndarray:
        """The readings (normalised float32) as the input tensor wants them: shaped, quantized when integer."""
        arr = values.reshape(self.x_shape)
        q = self.x["quantization"]
        return quantize_input(arr, self.x["dtype"], q["scale"], q["zero_point"]) if q else arr

    def finish_y(self, arr: np.ndarray) -> np.ndarray:
        """The forecast output as float: dequantized when integer; the last step of an all-steps output."""
        q = self.y["quantization"]
        out = dequantize_output(arr, q["scale"], q["zero_point"]) if q else arr
        axis = self.art["forecast_output"]["time_axis"]
        if axis is not None and out.ndim > axis:
            out = np.take(out, -1, axis=axis)
        return out.reshape(-1)

    def step(self, values: Any) -> list[float]:
        """One call: ``values`` (the readings input's elements, normalised: a list of floats or a float32 array)
        -> the forecast output's values."""
        raise NotImplementedError

    def _plain(self) -> bool:
        """True when a step needs no conversion: float readings and forecast, state carried as it comes out."""
        same = all(i["quantization"] == o["quantization"] and i["dtype"] == o["dtype"] for i, o in self.links)
        return (self.x["dtype"] == "float32" and self.y["dtype"] == "float32" and self.x["quantization"] is None
                and self.y["quantization"] is None and self.art["forecast_output"]["time_axis"] is None
                and same and self.art["streaming"])

    def reset(self) -> None:
        """Every state back to its initial value."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the runtime."""


class TFLiteEngine(Engine):
    """ai-edge-litert or tflite-runtime (they share the interpreter API)."""

    def __init__(self, data: bytes, art: dict[str, Any], runtime: str, threads: int = 1) -> None:
        super().__init__(art)
        self.runtime = runtime
        module = importlib.import_module(MODULES[runtime])
        try:
            with native_stderr_without():  # the delegate's "INFO: Created ... delegate" line, nothing else
                self.interp = module.Interpreter(model_content=data, num_threads=threads)
                self.interp.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise InputFileError(f"{runtime} cannot load '{art['file']}' from the bundle: {e}.",
                                 "Check the runtime version; `edge-lstm bundle verify` checks the bundle.") from e
        ins = {d["name"]: d for d in self.interp.get_input_details()}
        outs = {d["name"]: d for d in self.interp.get_output_details()}
        _check_names(art, set(ins), set(outs), runtime)
        self._xi = int(ins[self.x["name"]]["index"])
        self._yi = int(outs[self.y["name"]]["index"])
        self._links = [(int(ins[i["name"]]["index"]), int(outs[o["name"]]["index"]), i, o) for i, o in self.links]
        self._others = [(int(ins[t["name"]]["index"]), _zeros(t)) for t in self.others]
        self._variables = art["state"]["storage"] in ("variable", "mixed")
        self._per_window = self._variables and not art["streaming"]
        self._state: list[np.ndarray] = []
        self.version = runtime_version(runtime)
        self.reset()
        if self._plain():
            self.step = self._fast_step()  # type: ignore[method-assign]

    def _fast_step(self) -> Any:
        """The step of a plain streaming model (see :meth:`_plain`) with nothing but the runtime's own calls:
        the readings are copied into a preallocated input array, the state outputs fed back as they are."""
        set_tensor, get_tensor, invoke = self.interp.set_tensor, self.interp.get_tensor, self.interp.invoke
        xi, yi = self._xi, self._yi
        xbuf = np.zeros(self.x_shape, np.float32)
        xflat = xbuf.reshape(-1)
        links = [(i, o) for i, o, _, _ in self._links]
        state = self._state

        def step(values: Any) -> list[float]:
            xflat[:] = values
            set_tensor(xi, xbuf)
            if links:
                for k, (i, _) in enumerate(links):
                    set_tensor(i, state[k])
                invoke()
                for k, (_, o) in enumerate(links):
                    state[k] = get_tensor(o)
            else:
                invoke()
            return get_tensor(yi).ravel().tolist()  # type: ignore[no-any-return]

        return step

    def reset(self) -> None:
        """Variable tensors to zero, explicit state to its initial value, other inputs to zeros."""
        if self._variables:
            self.interp.reset_all_variables()
        self._state[:] = [_zeros(i) for _, _, i, _ in self._links]  # in place: the fast step holds this list
        for index, zeros in self._others:
            self.interp.set_tensor(index, zeros)

    def step(self, values: Any) -> list[float]:
        interp = self.interp
        if self._per_window:  # a window model's fused state must start at zero for every window
            interp.reset_all_variables()
        interp.set_tensor(self._xi, self.prepare_x(np.asarray(values, np.float32)))
        links = self._links
        if links:
            state = self._state
            for k, (i, _, _, _) in enumerate(links):
                interp.set_tensor(i, state[k])
            interp.invoke()
            self._state = [_requant(interp.get_tensor(o), ospec["quantization"], ispec["quantization"], ispec["dtype"])
                           for _, o, ispec, ospec in links]
        else:
            interp.invoke()
        return self.finish_y(interp.get_tensor(self._yi)).tolist()  # type: ignore[no-any-return]

    def close(self) -> None:
        self.interp = None


class OrtEngine(Engine):
    """ONNX Runtime on the CPU."""

    runtime = "onnxruntime"

    def __init__(self, data: bytes, art: dict[str, Any], threads: int = 1) -> None:
        super().__init__(art)
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # ORT raises its own exception types
            raise InputFileError(f"onnxruntime cannot load '{art['file']}' from the bundle: {e}.",
                                 "Check the onnxruntime version; `edge-lstm bundle verify` checks the bundle.") from e
        _check_names(art, {i.name for i in self.session.get_inputs()}, {o.name for o in self.session.get_outputs()},
                     "onnxruntime")
        self._fetch = [self.y["name"], *(o["name"] for _, o in self.links)]
        self._feed: dict[str, np.ndarray] = {}
        self.version = runtime_version("onnxruntime")
        self.reset()
        if self._plain():
            self.step = self._fast_step()  # type: ignore[method-assign]

    def reset(self) -> None:
        """Other inputs and the state back to zeros (in place: the fast step holds the feed)."""
        self._feed.clear()
        self._feed.update({t["name"]: _zeros(t) for t in self.others})
        for i, _ in self.links:
            self._feed[i["name"]] = _zeros(i)

    def _fast_step(self) -> Any:
        """The step of a plain streaming model (see :meth:`_plain`): the readings copied into a preallocated
        input array, the state outputs fed back as they come, no conversions."""
        run, fetch, feed, xname = self.session.run, self._fetch, self._feed, self.x["name"]
        xbuf = np.zeros(self.x_shape, np.float32)
        xflat = xbuf.reshape(-1)
        names = list(enumerate((i["name"] for i, _ in self.links), 1))

        def step(values: Any) -> list[float]:
            xflat[:] = values
            feed[xname] = xbuf
            outs = run(fetch, feed)
            for k, name in names:
                feed[name] = outs[k]
            return outs[0].ravel().tolist()  # type: ignore[no-any-return]

        return step

    def step(self, values: Any) -> list[float]:
        feed = self._feed
        feed[self.x["name"]] = self.prepare_x(np.asarray(values, np.float32))
        outs = self.session.run(self._fetch, feed)
        for k, (i, _) in enumerate(self.links):
            feed[i["name"]] = outs[k + 1]
        return self.finish_y(outs[0]).tolist()  # type: ignore[no-any-return]

    def close(self) -> None:
        self.session = None


def _check_names(art: dict[str, Any], ins: set[str], outs: set[str], runtime: str) -> None:
    want_in = {t["name"] for t in art["inputs"]}
    want_out = {t["name"] for t in art["outputs"]}
    if want_in != ins or want_out != outs:
        raise InputFileError(f"'{art['file']}' on {runtime} has inputs {sorted(ins)} and outputs {sorted(outs)}; the "
                             f"manifest says {sorted(want_in)} and {sorted(want_out)}.",
                             "The bundle does not describe its artifact: make it again with `edge-lstm bundle`.")


def choose(artifacts: list[dict[str, Any]], streaming: bool | None, runtime: str, name: str | None,
           precision: str | None) -> tuple[dict[str, Any], str]:
    """The artifact to run and the runtime to run it on (see :func:`edge_lstm.predict.Predictor.from_bundle`)."""
    if runtime != "auto" and runtime not in RUNTIMES:
        raise UsageError(f"Unknown runtime '{runtime}'.", f"Accepted: auto, {', '.join(RUNTIMES)}.")
    pool = [a for a in artifacts if name is None or a["file"] == name]
    if name is not None and not pool:
        raise UsageError(f"The bundle has no artifact '{name}'.",
                         f"It holds: {', '.join(a['file'] for a in artifacts)}.")
    if streaming is not None:
        pool = [a for a in pool if a["streaming"] == streaming]
    if precision is not None:
        pool = [a for a in pool if a["precision"] == precision]
    if not pool:
        kind = {True: "streaming ", False: "whole-window ", None: ""}[streaming]
        what = f"{kind}artifact" + (f" at precision {precision}" if precision else "")
        held = ", ".join(f"{a['file']} ({'streaming' if a['streaming'] else 'window'}, {a['precision']})"
                         for a in artifacts)
        hint = "Drop --streaming to use a window artifact, or pass --streaming for a streaming one." \
            if streaming is not None else "Pick another --precision."
        raise UsageError(f"The bundle has no {what}; it holds {held}.", hint)
    if streaming is None:  # the API's default: streaming when the bundle has it
        pool = sorted(pool, key=lambda a: not a["streaming"])
    wanted = [runtime] if runtime != "auto" else list(RUNTIMES)
    have = installed_runtimes()
    for art in pool:
        for rt in wanted:
            if rt in art["runtimes"] and rt in have:
                return art, rt
    needs = sorted({rt for a in pool for rt in a["runtimes"] if rt in wanted})
    if runtime != "auto" and runtime not in {rt for a in pool for rt in a["runtimes"]}:
        raise UsageError(f"No artifact that fits runs on {runtime}: {', '.join(a['file'] for a in pool)} need "
                         f"{', '.join(sorted({rt for a in pool for rt in a['runtimes']}))}.",
                         "Choose another --runtime, or bundle an artifact for this one.")
    raise UsageError(f"No runtime for these artifacts is installed here: they run on {', '.join(needs)}; installed: "
                     f"{', '.join(have) or 'none'}.",
                     "Install one: " + " or ".join(f"pip install {PACKAGES[r]}" for r in needs) + ".")


def open_engine(data: bytes, art: dict[str, Any], runtime: str, threads: int = 1) -> Engine:
    """The engine for ``art`` on ``runtime``."""
    if runtime == "onnxruntime":
        return OrtEngine(data, art, threads)
    return TFLiteEngine(data, art, runtime, threads)
