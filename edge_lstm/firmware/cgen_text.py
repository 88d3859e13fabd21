"""The fixed text of the generated C: the header, the kernels and the public functions.

:mod:`edge_lstm.firmware.cgen` fills in the model (weights, buffers, the op calls);
this module holds the C that does not depend on the model beyond which kernels
it uses.
"""

from __future__ import annotations

from edge_lstm import __version__
from edge_lstm.firmware.clit import cfloat, comment
from edge_lstm.firmware.program import Buffer, Program


def _mv(quantized: bool) -> str:
    """The matrix-vector kernel: eight inputs per pass over the outputs, eight outputs per iteration, then the rest.

    The eight outputs are written out so that -O2 (which in GCC 12 does not vectorise loops of unknown length)
    still packs them into SIMD instructions; -O3 vectorises the loop as well.
    """
    wt, acc = ("int8_t", "t") if quantized else ("float", "acc")
    cast = "(float)" if quantized else ""

    def terms(lane: str) -> str:
        return " + ".join(f"{cast}w{i}[{lane}] * x{i}" for i in range(8))

    lanes = [f"      {acc}[j + {q}] = {acc}[j + {q}] + {terms(f'j + {q}')};" for q in range(8)]
    lines = [
        "/* acc[j] += " + ("s[j] * " if quantized else "") + "sum_i x[i] * w[i][j] for j < n; w is input-major "
        "with row stride ld. The inner loops",
        " * run over contiguous outputs, so they vectorise without reordering any output's sum"
        + (" (int8 weights, one float scale per output channel)." if quantized else "."),
        " */",
        f"static void mv(float *restrict acc, const {wt} *restrict w, const float *restrict s, "
        "const float *restrict x,",
        "               int k, int n, int ld)", "{",
        *(["  float *restrict t = mv_tmp;"] if quantized else []),
        "  int i = 0, j;",
        *(["  for (j = 0; j < n; j++) t[j] = 0.0f;"] if quantized else ["  (void)s;"]),
        "  for (; i + 8 <= k; i += 8) {",
        "    const float x0 = x[i], x1 = x[i + 1], x2 = x[i + 2], x3 = x[i + 3];",
        "    const float x4 = x[i + 4], x5 = x[i + 5], x6 = x[i + 6], x7 = x[i + 7];",
        f"    const {wt} *w0 = w + (long)i * ld, *w1 = w0 + ld, *w2 = w1 + ld, *w3 = w2 + ld;",
        f"    const {wt} *w4 = w3 + ld, *w5 = w4 + ld, *w6 = w5 + ld, *w7 = w6 + ld;",
        "    for (j = 0; j + 8 <= n; j += 8) {", *lanes, "    }",
        f"    for (; j < n; j++) {acc}[j] = {acc}[j] + {terms('j')};",
        "  }",
        "  for (; i < k; i++) {",
        "    const float xi = x[i];",
        f"    const {wt} *wi = w + (long)i * ld;",
        f"    for (j = 0; j < n; j++) {acc}[j] += {cast}wi[j] * xi;",
        "  }",
        *(["  for (j = 0; j < n; j++) acc[j] += s[j] * t[j];"] if quantized else []),
        "}", "",
    ]
    return "\n".join(lines)


_ACTIVATIONS = """\
/* e^x to about 1 ulp (|x| clamped to 88): x = k ln2 + r with |r| <= ln2/2 (Cody-Waite, ln2 in two parts), e^r by
 * its Taylor series to r^7 (remainder under 1e-8 relative), 2^k from the exponent bits. Written out rather than
 * calling expf(), and without branches (the clamp works on the bits), so that loops over it vectorise and the firmware
 * needs no libm tables. */
static inline float fexp(float x)
{
  float t, r, p;
  int k;
  uint32_t xb, ab;
  memcpy(&xb, &x, sizeof xb);
  ab = xb & 0x7fffffffu;
  ab = ab > 0x42b00000u ? 0x42b00000u : ab;
  xb = (xb & 0x80000000u) | ab;
  memcpy(&x, &xb, sizeof x);
  t = x * 1.44269504f;
  k = (int)(t + (t >= 0.0f ? 0.5f : -0.5f));
  r = x - (float)k * 0.693145751953125f - (float)k * 1.42860677e-6f;
  p = 1.0f + r * (1.0f + r * (0.5f + r * (1.66666672e-1f + r * (4.16666679e-2f + r * (8.33333377e-3f
      + r * (1.38888892e-3f + r * 1.98412701e-4f))))));
  xb = (uint32_t)(k + 127) << 23;
  memcpy(&t, &xb, sizeof t);
  return p * t;
}

static inline float sigm(float v) { return 1.0f / (1.0f + fexp(-v)); }

/* tanh(v) = e / (e + 2) with e = expm1(2|v|); below |v| = 0.175 expm1 is its Taylor series, which keeps the relative
 * accuracy near 0. Sign, magnitude and the choice between the two work on the bits, so the loop has no branch and
 * vectorises even on plain SSE2. */
static inline float ftanh(float v)
{
  uint32_t vb, sign, bs, bb, m;
  float a, t, small, big, e;
  memcpy(&vb, &v, sizeof vb);
  sign = vb & 0x80000000u;
  vb &= 0x7fffffffu;
  memcpy(&a, &vb, sizeof a);
  t = 2.0f * a;
  small = t * (1.0f + t * (0.5f + t * (1.66666672e-1f + t * (4.16666679e-2f + t * (8.33333377e-3f
          + t * 1.38888892e-3f)))));
  big = fexp(t) - 1.0f;
  memcpy(&bs, &small, sizeof bs);
  memcpy(&bb, &big, sizeof bb);
  m = 0u - (uint32_t)(vb < 0x3e333333u); /* |v| < 0.175f */
  bs = (bs & m) | (bb & ~m);
  memcpy(&e, &bs, sizeof e);
  e = e / (e + 2.0f);
  memcpy(&vb, &e, sizeof vb);
  vb |= sign;
  memcpy(&e, &vb, sizeof e);
  return e;
}
"""

_KERNELS = {
    "lstm": """\
/* One LSTM step (ONNX gate order i, o, f, c): g = b + Wx x + Wh h; c = f*c + i*g~; h = o*tanh(c). Each loop is
 * one activation over contiguous gates, so it vectorises. */
static void lstm(const float *x, float *h, float *c, int in, int hid, const wt_t *wx, const float *sx,
                 const wt_t *wh, const float *sh, const float *b, float *g)
{
  int j;
  memcpy(g, b, (size_t)(4 * hid) * sizeof(float));
  mv(g, wx, sx, x, in, 4 * hid, 4 * hid);
  mv(g, wh, sh, h, hid, 4 * hid, 4 * hid);
  for (j = 0; j < 3 * hid; j++) g[j] = sigm(g[j]);
  for (j = 3 * hid; j < 4 * hid; j++) g[j] = ftanh(g[j]);
  for (j = 0; j < hid; j++) c[j] = g[2 * hid + j] * c[j] + g[j] * g[3 * hid + j];
  for (j = 0; j < hid; j++) h[j] = g[hid + j] * ftanh(c[j]);
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
    for (j = 0; j < 2 * hid; j++) gx[j] = sigm(gx[j] + gh[j]);
    for (j = 0; j < hid; j++) gx[2 * hid + j] = ftanh(gx[2 * hid + j] + gx[hid + j] * gh[2 * hid + j]);
  } else {
    mv(gh, wh, sh, h, hid, 2 * hid, n);
    for (j = 0; j < 2 * hid; j++) gx[j] = sigm(gx[j] + gh[j]);
    for (j = 0; j < hid; j++) gh[j] = gx[hid + j] * h[j];
    mv(gh + 2 * hid, wh + 2 * hid, sh ? sh + 2 * hid : 0, gh, hid, hid, n);
    for (j = 0; j < hid; j++) gx[2 * hid + j] = ftanh(gx[2 * hid + j] + gh[2 * hid + j]);
  }
  for (j = 0; j < hid; j++) h[j] = (1.0f - gx[j]) * gx[2 * hid + j] + gx[j] * h[j];
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
  if (relu) for (j = 0; j < hid; j++) h[j] = g[j] > 0.0f ? g[j] : 0.0f;
  else for (j = 0; j < hid; j++) h[j] = ftanh(g[j]);
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
    for (j = 0; j < d; j++) { yr[j] = fexp(xr[j] - m); sum += yr[j]; }
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
    """``<prefix>.<precision>.h``: sizes, the three functions, and how to feed them."""
    m = _macro(prefix)
    guard = f"{m}_{precision.upper().replace('-', '_')}_H_"
    outs = ", ".join(f"{o.name} [{'x'.join(map(str, o.shape))}]" for o in prog.outputs)
    lines = [
        f"/* {prefix}.{precision}.h: generated by edge-lstm {__version__} from {comment(source)}; do not edit.",
        f" * Precision: {_precision_text(precision)}.",
        " * Static buffers only (no malloc); one model instance; not reentrant.",
        " */",
        f"#ifndef {guard}", f"#define {guard}", "", "#ifdef __cplusplus", 'extern "C" {', "#endif", "",
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
        "", "#ifdef __cplusplus", "}", "#endif", f"#endif /* {guard} */", "",
    ]
    return "\n".join(lines)


def _precision_text(precision: str) -> str:
    if precision == "fp32":
        return "float32 weights and activations"
    return "int8 weights with one float32 scale per output channel; float32 activations"


def source(prog: Program, quantized: bool, prefix: str, precision: str, src: str, consts: list[str],
           seq: list[str], post: list[str], max_n: int) -> str:
    """``<prefix>.<precision>.c``: constants, buffers, kernels, and the public functions."""
    kinds = {op.kind for op in prog.ops}
    state = [b for b in prog.buffers.values() if b.role == "state"]
    work = [b for b in prog.buffers.values() if b.role == "work"]
    parts = [
        f"/* {prefix}.{precision}.c: generated by edge-lstm {__version__} from {comment(src)}; do not edit. */",
        f'#include "{prefix}.{precision}.h"', "", "#include <math.h>", "#include <stdint.h>", "#include <string.h>", "",
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
    parts += ["", _mv(quantized), _ACTIVATIONS]
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
