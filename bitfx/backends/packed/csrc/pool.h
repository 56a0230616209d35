/* A work-sharing thread pool for the kernels' parallel loops.
 *
 * `bitfx_parallel_for(items, threads, fn, ctx)` runs fn(ctx, item, worker) for every item in
 * [0, items) on at most `threads` threads, the calling thread included: every participant takes
 * the next item from one atomic counter, so the caller starts at once and a worker that the
 * operating system has not scheduled yet simply finds nothing left. The call returns when every
 * item is done; it only ever waits for an item some thread is running, never for a thread to
 * arrive (no fork-join barrier). `worker` is 0 for the caller and 1 .. threads−1 for the pool's
 * threads (an index for per-thread scratch memory). Workers spin briefly between calls, then
 * sleep on a futex. A call made while another thread's call is running runs on the caller alone.
 */
#ifndef BITFX_POOL_H
#define BITFX_POOL_H

#include <stddef.h>
#include <stdint.h>

typedef void (*bitfx_task)(void *ctx, int64_t item, int64_t worker);

void bitfx_parallel_for(int64_t items, int64_t threads, bitfx_task fn, void *ctx);

/* Per-thread scratch for a parallel call (index it by `worker`): `threads` buffers of `bytes` bytes,
 * 64-byte aligned, their first `zeroed` bytes set to 0, all allocated before any work starts so that
 * running out of memory skips no item silently; null then, with nothing left allocated. */
float **bitfx_thread_scratch(int64_t threads, size_t bytes, size_t zeroed);
void bitfx_free_thread_scratch(float **scratch, int64_t threads);

#endif
