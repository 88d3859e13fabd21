"""The fixed text of the generated C: the header, the kernels and the public functions.

:mod:`edge_lstm.firmware.cgen` fills in the model (weights, buffers, the op calls);
this module holds the C that does not depend on the model beyond which kernels
it uses.
"""

from __future__ import annotations

from edge_lstm import __version__
from edge_lstm.firmware.clit import cfloat, comment
from edge_lstm.firmware.program import Buffer, Program

_MV_F32 = """\
/* acc[j] += sum_i x[i] * w[i][j] for j < n; w is input-major with row stride ld. The inner loop runs over
 * contiguous outputs, so it vectorises without reordering any output's sum. */
static void mv(float *restrict acc, const float *restrict w, const float *restrict s, const float *restrict x,
               int k, int n, int ld)
{
  int i = 0, j;
  (void)s;
  for (; i + 4 <= k; i += 4) {
    const float x0 = x[i], x1 = x[i + 1], x2 = x[i + 2], x3 = x[i + 3];
    const float *w0 = w + (long)i * ld, *w1 = w0 + ld, *w2 = w1 + ld, *w3 = w2 + ld;
    for (j = 0; j < n; j++) acc[j] = acc[j] + w0[j] * x0 + w1[j] * x1 + w2[j] * x2 + w3[j] * x3;
  }
  for (; i < k; i++) {
    const float xi = x[i];
    const float *wi = w + (long)i * ld;
    for (j = 0; j < n; j++) acc[j] += wi[j] * xi;
  }
}
"""

_MV_I8 = """\
/* acc[j] += s[j] * sum_i x[i] * q[i][j] for j < n: int8 weights, one float scale per output channel;
 * q is input-major with row stride ld, so the inner loop runs over contiguous outputs. */
static void mv(float *restrict acc, const int8_t *restrict w, const float *restrict s, const float *restrict x,
               int k, int n, int ld)
{
  float *restrict t = mv_tmp;
  int i = 0, j;
  for (j = 0; j < n; j++) t[j] = 0.0f;
  for (; i + 4 <= k; i += 4) {
    const float x0 = x[i], x1 = x[i + 1], x2 = x[i + 2], x3 = x[i + 3];
    const int8_t *w0 = w + (long)i * ld, *w1 = w0 + ld, *w2 = w1 + ld, *w3 = w2 + ld;
    for (j = 0; j < n; j++)
      t[j] = t[j] + (float)w0[j] * x0 + (float)w1[j] * x1 + (float)w2[j] * x2 + (float)w3[j] * x3;
  }
  for (; i < k; i++) {
    const float xi = x[i];
    const int8_t *wi = w + (long)i * ld;
    for (j = 0; j < n; j++) t[j] += (float)wi[j] * xi;
  }
  for (j = 0; j < n; j++) acc[j] += s[j] * t[j];
}
"""

_SIGM = "static float sigm(float v) { return 1.0f / (1.0f + expf(-v)); }\n"

_KERNELS = {
    "lstm": """\
/* One LSTM step (ONNX gate order i, o, f, c): g = b + Wx x + Wh h; c = f*c + i*g~; h = o*tanh(c). */
static void lstm(const float *x, float *h, float *c, int in, int hid, const wt_t *wx, const float *sx,
                 const wt_t *wh, const float *sh, const float *b, float *g)
{
  int j;
  memcpy(g, b, (size_t)(4 * hid) * sizeof(float));
  mv(g, wx, sx, x, in, 4 * hid, 4 * hid);
  mv(g, wh, sh, h, hid, 4 * hid, 4 * hid);
  for (j = 0; j < hid; j++) {
    const float ig = sigm(g[j]), og = sigm(g[hid + j]), fg = sigm(g[2 * hid + j]), cg = tanhf(g[3 * hid + j]);
    c[j] = fg * c[j] + ig * cg;
    h[j] = og * tanhf(c[j]);
  }
}
""",
    "gru": """\
/* One GRU step (ONNX gate order z, r, n; PyTorch uses linear_before_reset = 1). */
static void gru(const float *x, float *h, int in, int hid, const wt_t *wx, const float *sx, const wt_t *wh,
                const float *sh, const float *bx, const float *bh, float *gx, float *gh, int lbr)
{
  int j;
  const int n = 3 * hid;
  memcpy(gx, bx, (size_t)n * sizeof(float));
  mv(gx, wx, sx, x, in, n, n);
  memcpy(gh, bh, (size_t)n * sizeof(float));
  if (lbr) {
    mv(gh, wh, sh, h, hid, n, n);
    for (j = 0; j < hid; j++) {
      const float z = sigm(gx[j] + gh[j]), r = sigm(gx[hid + j] + gh[hid + j]);
      const float nn = tanhf(gx[2 * hid + j] + r * gh[2 * hid + j]);
      h[j] = (1.0f - z) * nn + z * h[j];
    }
    return;
  }
  mv(gh, wh, sh, h, hid, 2 * hid, n);
  for (j = 0; j < hid; j++) {
    const float z = sigm(gx[j] + gh[j]), r = sigm(gx[hid + j] + gh[hid + j]);
    gx[j] = z;
    gh[j] = r * h[j];
  }
  mv(gh + 2 * hid, wh + 2 * hid, sh ? sh + 2 * hid : 0, gh, hid, hid, n);
  for (j = 0; j < hid; j++) {
    const float nn = tanhf(gx[2 * hid + j] + gh[2 * hid + j]);
    h[j] = (1.0f - gx[j]) * nn + gx[j] * h[j];
  }
}
""",
    "rnn": """\
/* One plain RNN step: h = tanh(b + Wx x + Wh h), or relu. */
static void rnn(const float *x, float *h, int in, int hid, const wt_t *wx, const float *sx, const wt_t *wh,
                const float *sh, const float *b, float *g, int relu)
{
  int j;
  memcpy(g, b, (size_t)hid * sizeof(float));
  mv(g, wx, sx, x, in, hid, hid);
  mv(g, wh, sh, h, hid, hid, hid);
  for (j = 0; j < hid; j++) h[j] = relu ? (g[j] > 0.0f ? g[j] : 0.0f) : tanhf(g[j]);
}
""",
    "dense": """\
/* y[r] = b[r] + x[r] W for each of rows rows (Linear, MatMul, Gemm). */
static void dense(const float *x, float *y, int rows, int k, int n, const wt_t *w, const float *s, const float *b)
{
  int r;
  for (r = 0; r < rows; r++) {
    float *yr = y + (long)r * n;
    if (b) memcpy(yr, b + (long)r * n, (size_t)n * sizeof(float));
    else memset(yr, 0, (size_t)n * sizeof(float));
    mv(yr, w, s, x + (long)r * k, k, n, n);
  }
}
""",
    "layernorm": """\
/* LayerNorm over the last d elements of each row. */
static void layernorm(const float *x, float *y, int rows, int d, const float *gamma, const float *beta, float eps)
{
  int r, j;
  for (r = 0; r < rows; r++) {
    const float *xr = x + (long)r * d;
    float *yr = y + (long)r * d;
    float mean = 0.0f, var = 0.0f, inv;
    for (j = 0; j < d; j++) mean += xr[j];
    mean /= (float)d;
    for (j = 0; j < d; j++) { const float t = xr[j] - mean; var += t * t; }
    inv = 1.0f / sqrtf(var / (float)d + eps);
    for (j = 0; j < d; j++) yr[j] = (xr[j] - mean) * inv * gamma[j] + beta[j];
  }
}
""",
    "softmax": """\
/* Softmax (or log-softmax) over the last d elements of each row, shifted by the row's maximum. */
static void softmax(const float *x, float *y, int rows, int d, int log_out)
{
  int r, j;
  for (r = 0; r < rows; r++) {
    const float *xr = x + (long)r * d;
    float *yr = y + (long)r * d;
    float m = xr[0], sum = 0.0f;
    for (j = 1; j < d; j++) m = xr[j] > m ? xr[j] : m;
    for (j = 0; j < d; j++) { yr[j] = expf(xr[j] - m); sum += yr[j]; }
    if (log_out) { const float ls = logf(sum); for (j = 0; j < d; j++) yr[j] = xr[j] - m - ls; }
    else { const float inv = 1.0f / sum; for (j = 0; j < d; j++) yr[j] *= inv; }
  }
}
""",
}


def _macro(prefix: str) -> str:
    return prefix.upper()


def header(prog: Program, precision: str, prefix: str, source: str,
           normalization: dict[str, list[float]] | None) -> str:
    """``<prefix>.h``: sizes, the three functions, and how to feed them."""
    m = _macro(prefix)
    outs = ", ".join(f"{o.name} [{'x'.join(map(str, o.shape))}]" for o in prog.outputs)
    lines = [
        f"/* {prefix}.h: generated by edge-lstm {__version__} from {comment(source)}; do not edit.",
        f" * Precision: {_precision_text(precision)}.",
        " * Static buffers only (no malloc); one model instance; not reentrant.",
        " */",
        f"#ifndef {m}_H_", f"#define {m}_H_", "", "#ifdef __cplusplus", 'extern "C" {', "#endif", "",
        f"/* floats per time step: input '{comment(prog.input_name)}' "
        f"[{'x'.join(map(str, prog.input_shape))}], time axis {prog.time_axis} */",
        f"#define {m}_INPUT_SIZE {prog.n_input}",
        f"/* time steps in one window (what {prefix}_window reads) */",
        f"#define {m}_WINDOW {prog.window}",
        f"/* floats {prefix}_step writes: {comment(outs)} */",
        f"#define {m}_OUTPUT_SIZE {prog.step_output_size}",
        f"/* floats {prefix}_window writes (outputs of every step for per-step outputs) */",
        f"#define {m}_WINDOW_OUTPUT_SIZE {prog.window_output_size}",
        f'#define {m}_PRECISION "{precision}"',
    ]
    if normalization and normalization.get("mean") and normalization.get("std"):
        mean = ", ".join(cfloat(v) for v in normalization["mean"])
        std = ", ".join(cfloat(v) for v in normalization["std"])
        lines += ["/* the model reads normalised inputs: x = (reading - mean) / std, per feature */",
                  f"#define {m}_INPUT_MEAN {{{mean}}}", f"#define {m}_INPUT_STD {{{std}}}"]
    lines += [
        "",
        "/* Zero the recurrent state: call before a new stream. */",
        f"void {prefix}_reset(void);",
        f"/* Streaming: one time step x[{m}_INPUT_SIZE] in, y[{m}_OUTPUT_SIZE] out; the state carries over. */",
        f"void {prefix}_step(const float *x, float *y);",
        f"/* A whole window x[{m}_WINDOW][{m}_INPUT_SIZE]: resets, steps through it, writes "
        f"y[{m}_WINDOW_OUTPUT_SIZE]. */",
        f"void {prefix}_window(const float *x, float *y);",
        "", "#ifdef __cplusplus", "}", "#endif", f"#endif /* {m}_H_ */", "",
    ]
    return "\n".join(lines)


def _precision_text(precision: str) -> str:
    if precision == "fp32":
        return "float32 weights and activations"
    return "int8 weights with one float32 scale per output channel; float32 activations"


def source(prog: Program, quantized: bool, prefix: str, src: str, consts: list[str], seq: list[str],
           post: list[str], max_n: int) -> str:
    """``<prefix>.c``: constants, buffers, kernels, and the public functions."""
    kinds = {op.kind for op in prog.ops}
    state = [b for b in prog.buffers.values() if b.role == "state"]
    work = [b for b in prog.buffers.values() if b.role == "work"]
    parts = [
        f"/* {prefix}.c: generated by edge-lstm {__version__} from {comment(src)}; do not edit. */",
        f'#include "{prefix}.h"', "", "#include <math.h>", "#include <stdint.h>", "#include <string.h>", "",
        f"typedef {'int8_t' if quantized else 'float'} wt_t;", "",
        "/* ---- constants (weights, scales, biases): const, so they stay in flash */", *consts,
        "/* ---- recurrent state: kept across steps, restored by reset */",
        *[f"static float {b.name}[{b.size}];" for b in state],
        *[f"static const float {b.name}_init[{b.size}] = {{{', '.join(map(cfloat, b.init))}}};"
          for b in state if b.init is not None and b.init.any()],
        "/* ---- work buffers: one time step of each intermediate value */",
        *[f"static float {b.name}[{b.size}];" for b in work],
    ]
    if quantized:
        parts.append(f"static float mv_tmp[{max_n}];")
    parts += ["", _MV_I8 if quantized else _MV_F32]
    if kinds & {"lstm", "gru"}:
        parts.append(_SIGM)
    parts += [_KERNELS[k] for k in ("lstm", "gru", "rnn", "dense", "layernorm", "softmax") if k in kinds]
    parts += _api(prog, prefix, state, seq, post)
    return "\n".join(parts) + "\n"


def _api(prog: Program, prefix: str, state: list[Buffer], seq: list[str], post: list[str]) -> list[str]:
    m = _macro(prefix)
    reset = [f"  memcpy({b.name}, {b.name}_init, sizeof {b.name});" if b.init is not None and b.init.any()
             else f"  memset({b.name}, 0, sizeof {b.name});" for b in state]
    step_copy, win_seq, win_post, off, woff = [], [], [], 0, 0
    for o in prog.outputs:
        step_copy.append(f"  memcpy(y + {off}, {o.buf}, {o.size} * sizeof(float));  /* {comment(o.name)} */")
        if o.phase == "seq":
            win_seq.append(f"    memcpy(y + {woff} + (long)t * {o.size}, {o.buf}, {o.size} * sizeof(float));")
            woff += o.size * prog.window
        else:
            win_post.append(f"  memcpy(y + {woff}, {o.buf}, {o.size} * sizeof(float));")
            woff += o.size
        off += o.size
    return [
        "static void run_seq(const float *x)", "{", "  int j;", "  (void)j;", *seq, "}", "",
        "/* x: the last step's input (an output may read it, as a skip connection) */",
        "static void run_post(const float *x)", "{", "  int j;", "  (void)j;", "  (void)x;", *post, "}", "",
        f"void {prefix}_reset(void)", "{", *reset, "}", "",
        f"void {prefix}_step(const float *x, float *y)", "{", "  run_seq(x);", "  run_post(x);", *step_copy, "}", "",
        f"void {prefix}_window(const float *x, float *y)", "{", "  int t;", f"  {prefix}_reset();",
        f"  for (t = 0; t < {m}_WINDOW; t++) {{", f"    run_seq(x + (long)t * {m}_INPUT_SIZE);", *win_seq, "  }",
        f"  run_post(x + (long)({m}_WINDOW - 1) * {m}_INPUT_SIZE);", *win_post, "}",
    ]


def comment_safe(text: str) -> str:
    """An output name safe inside a C comment."""
    return comment(text)
