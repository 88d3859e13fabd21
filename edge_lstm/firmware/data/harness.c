/* edge-lstm Cortex-M test harness (shipped with edge-lstm).
 *
 * Runs the generated model on the windows in cortexm_harness_data.h, both through the window API and step by step, and
 * prints every output as its float32 bit pattern over semihosting, with the stack high-water mark of the model
 * calls (from a stack paint) and the ticks of the MPS2 boards' CMSDK timer 0 around each call. Under qemu's
 * -icount shift=0 the virtual clock advances by a fixed time per instruction, so ticks count emulated
 * instructions; a loop of known length calibrates instructions per tick.
 *
 * Built with -DEDGE_LSTM_BASELINE, the model calls are replaced by stubs: the difference between the two ELFs'
 * sections is what the model itself costs in flash and RAM. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "cortexm_harness_data.h"

#define PAINT 0x5AA5C33Cu
#define TIMER_CTRL (*(volatile uint32_t *)0x40000000u)
#define TIMER_VALUE (*(volatile uint32_t *)0x40000004u)
#define TIMER_RELOAD (*(volatile uint32_t *)0x40000008u)
#define CAL_LOOPS 1000000u

extern uint32_t __StackLimit;

static float win_out[H_N_WINDOWS][H_WINDOW_OUT];
static float stream_out[H_N_STREAMS][H_WINDOW][H_STEP_OUT];
static uint32_t win_ticks[H_N_WINDOWS], stream_ticks[H_N_STREAMS];

#ifdef EDGE_LSTM_BASELINE
static volatile float sink;
static void __attribute__((noinline)) stub_reset(void) { sink = 0.0f; }
static void __attribute__((noinline)) stub_io(const float *x, float *y) { sink = x[0]; y[0] = sink; }
#define RESET() stub_reset()
#define STEP(x, y) stub_io((x), (y))
#define WINDOW(x, y) stub_io((x), (y))
#else
#define RESET() H_RESET()
#define STEP(x, y) H_STEP((x), (y))
#define WINDOW(x, y) H_WINDOW_FN((x), (y))
#endif

static uint32_t __attribute__((noinline)) stack_pointer(void)
{
  uint32_t sp;
  __asm volatile("mov %0, sp" : "=r"(sp));
  return sp;
}

/* Fill the free stack below this frame with a pattern; the deepest overwritten word marks the high-water mark. */
static void __attribute__((noinline)) paint_stack(void)
{
  uint32_t *p = &__StackLimit;
  uint32_t *top = (uint32_t *)(stack_pointer() - 32u);
  while (p < top) *p++ = PAINT;
}

static uint32_t lowest_touched(void)
{
  const uint32_t *p = &__StackLimit;
  while (*p == PAINT) p++;
  return (uint32_t)p;
}

static uint32_t calibrate(void)
{
  uint32_t n = CAL_LOOPS, t0, t1;
  t0 = TIMER_VALUE;
  __asm volatile("1: subs %0, %0, #1\n\tbne 1b" : "+r"(n) : : "cc");
  t1 = TIMER_VALUE;
  return t0 - t1;
}

static uint32_t bits(float v)
{
  uint32_t u;
  memcpy(&u, &v, sizeof u);
  return u;
}

static void print_floats(const float *v, int n)
{
  int i;
  for (i = 0; i < n; i++) printf(" %08lx", (unsigned long)bits(v[i]));
}

int main(void)
{
  uint32_t cal, sp0, t0;
  int w, t;
  TIMER_RELOAD = 0xFFFFFFFFu;
  TIMER_VALUE = 0xFFFFFFFFu;
  TIMER_CTRL = 1u;
  cal = calibrate();
  sp0 = stack_pointer();
  paint_stack();
  for (w = 0; w < H_N_WINDOWS; w++) {
    t0 = TIMER_VALUE;
    WINDOW(h_inputs[w], win_out[w]);
    win_ticks[w] = t0 - TIMER_VALUE;
  }
  for (w = 0; w < H_N_STREAMS; w++) {
    t0 = TIMER_VALUE;
    RESET();
    for (t = 0; t < H_WINDOW; t++) STEP(h_inputs[w] + t * H_INPUT_SIZE, stream_out[w][t]);
    stream_ticks[w] = t0 - TIMER_VALUE;
  }
  printf("EDGE-LSTM CAL %lu %lu\n", (unsigned long)(2u * CAL_LOOPS), (unsigned long)cal);
  printf("EDGE-LSTM STACK %lu\n", (unsigned long)(sp0 - lowest_touched()));
  for (w = 0; w < H_N_WINDOWS; w++) {
    printf("EDGE-LSTM W %d %lu", w, (unsigned long)win_ticks[w]);
    print_floats(win_out[w], H_WINDOW_OUT);
    printf("\n");
  }
  for (w = 0; w < H_N_STREAMS; w++) {
    printf("EDGE-LSTM S %d %lu", w, (unsigned long)stream_ticks[w]);
    for (t = 0; t < H_WINDOW; t++) print_floats(stream_out[w][t], H_STEP_OUT);
    printf("\n");
  }
  printf("EDGE-LSTM END\n");
  return 0;
}
