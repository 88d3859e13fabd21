/* Minimal Cortex-M startup for edge-lstm's firmware builds (shipped with edge-lstm; MIT-style, no vendor code).
 *
 * The vector table's reset handler copies .data from flash, zeroes .bss, enables the FPU when the build has one,
 * opens newlib's semihosting I/O, runs the C library's constructors and calls main(); exit() ends a qemu run
 * through semihosting. The stack is the one the linker script reserves (the vector table's first word), not one
 * a debugger or monitor would choose, so its high-water mark can be measured. */
#include <stdint.h>
#include <stdlib.h>

extern uint32_t __etext, __data_start__, __data_end__, __bss_start__, __bss_end__, __StackTop;
extern int main(void);
extern void initialise_monitor_handles(void);
extern void __libc_init_array(void);

void Reset_Handler(void);
void Default_Handler(void);

void Default_Handler(void)
{
  for (;;) {
  }
}

/* Built without crt0: the constructor hooks newlib's __libc_init_array calls. */
void _init(void) {}
void _fini(void) {}

__attribute__((section(".vectors"), used)) void (*const edge_lstm_vectors[16])(void) = {
  (void (*)(void))(&__StackTop), Reset_Handler, Default_Handler, Default_Handler, Default_Handler,
  Default_Handler, Default_Handler, 0, 0, 0, 0, Default_Handler, Default_Handler, 0, Default_Handler,
  Default_Handler,
};

void Reset_Handler(void)
{
  uint32_t *src = &__etext, *dst = &__data_start__;
  while (dst < &__data_end__) *dst++ = *src++;
  for (dst = &__bss_start__; dst < &__bss_end__;) *dst++ = 0u;
#if defined(__ARM_FP)
  /* CPACR: full access to coprocessors 10 and 11 (the FPU) */
  *(volatile uint32_t *)0xE000ED88u |= (0xFu << 20);
  __asm volatile("dsb\n\tisb");
#endif
  initialise_monitor_handles();
  __libc_init_array();
  exit(main());
}
