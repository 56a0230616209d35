/* The work-sharing pool (pool.h). One job at a time: its description (fn, ctx, items, threads)
 * and a 64-bit counter whose high half is the job's sequence number and low half the next item.
 * A pool thread claims an item with a compare-and-swap that also checks the sequence number, so
 * a thread that read the description of a finished job can never run an item of a newer one. */
#define _GNU_SOURCE
#include "pool.h"

#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MAX_WORKERS 63
#define SPIN_ROUNDS 20000 /* pause (x86) or yield (AArch64) hints a worker spins before sleeping (~0.1–0.5 ms) */

static inline void cpu_relax(void) {
#if defined(__x86_64__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

static struct {
    pthread_mutex_t caller;  /* held by the thread whose job runs */
    pthread_mutex_t startup; /* guards starting workers */
    int64_t workers;         /* pool threads started */
    uint64_t counter;        /* sequence << 32 | next item */
    bitfx_task fn;
    void *ctx;
    int64_t items, threads;
    int64_t done;         /* items finished in the current job */
    uint32_t generation;  /* futex word: low 32 bits of the sequence */
    int32_t sleepers;
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER};

static void wake_all(void) { syscall(SYS_futex, &pool.generation, FUTEX_WAKE_PRIVATE, INT_MAX, 0, 0, 0); }

/* Take items of the current job until none is left (or the job is not ours to help with). */
static void help(int64_t worker) {
    for (;;) {
        uint64_t seen = __atomic_load_n(&pool.counter, __ATOMIC_ACQUIRE);
        const bitfx_task fn = __atomic_load_n(&pool.fn, __ATOMIC_RELAXED);
        void *ctx = __atomic_load_n(&pool.ctx, __ATOMIC_RELAXED);
        const int64_t items = __atomic_load_n(&pool.items, __ATOMIC_RELAXED);
        const int64_t threads = __atomic_load_n(&pool.threads, __ATOMIC_RELAXED);
        const int64_t next = (int64_t)(uint32_t)seen;
        if (next >= items || worker >= threads) return;
        /* Succeeds only if the job read above is still the current one with this item next. */
        if (__atomic_compare_exchange_n(&pool.counter, &seen, seen + 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
            fn(ctx, next, worker);
            __atomic_add_fetch(&pool.done, 1, __ATOMIC_RELEASE);
        }
    }
}

static void *worker_main(void *arg) {
    const int64_t worker = (int64_t)(intptr_t)arg;
    uint32_t seen = __atomic_load_n(&pool.generation, __ATOMIC_ACQUIRE);
    for (;;) {
        uint32_t now;
        for (int spins = 0; (now = __atomic_load_n(&pool.generation, __ATOMIC_ACQUIRE)) == seen;) {
            if (++spins < SPIN_ROUNDS) {
                cpu_relax();
                continue;
            }
            __atomic_add_fetch(&pool.sleepers, 1, __ATOMIC_SEQ_CST);
            syscall(SYS_futex, &pool.generation, FUTEX_WAIT_PRIVATE, seen, 0, 0, 0);
            __atomic_sub_fetch(&pool.sleepers, 1, __ATOMIC_SEQ_CST);
            spins = 0;
        }
        seen = now;
        help(worker);
    }
    return 0;
}

static void after_fork_in_child(void) {
    /* The child has none of the parent's threads: start a fresh pool when it first needs one. */
    pthread_mutex_init(&pool.caller, 0);
    pthread_mutex_init(&pool.startup, 0);
    pool.workers = 0;
}

/* Start pool threads up to `wanted` (fewer if the system refuses); returns how many there are. */
static int64_t ensure_workers(int64_t wanted) {
    static int registered = 0;
    if (wanted > MAX_WORKERS) wanted = MAX_WORKERS;
    if (__atomic_load_n(&pool.workers, __ATOMIC_ACQUIRE) >= wanted) return wanted;
    pthread_mutex_lock(&pool.startup);
    if (!registered) registered = pthread_atfork(0, 0, after_fork_in_child) == 0;
    while (pool.workers < wanted) {
        pthread_t thread;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        const int failed = pthread_create(&thread, &attr, worker_main, (void *)(intptr_t)(pool.workers + 1));
        pthread_attr_destroy(&attr);
        if (failed) break;
        __atomic_store_n(&pool.workers, pool.workers + 1, __ATOMIC_RELEASE);
    }
    const int64_t started = pool.workers;
    pthread_mutex_unlock(&pool.startup);
    return started;
}

void bitfx_parallel_for(int64_t items, int64_t threads, bitfx_task fn, void *ctx) {
    if (items <= 0) return;
    if (threads > items) threads = items;
    if (threads > 1) threads = 1 + ensure_workers(threads - 1);
    if (threads <= 1 || items > UINT32_MAX || pthread_mutex_trylock(&pool.caller) != 0) {
        for (int64_t item = 0; item < items; ++item) fn(ctx, item, 0);
        return;
    }
    /* Publish: the description first, then the counter with the new sequence (release), then wake. */
    const uint64_t sequence = (__atomic_load_n(&pool.counter, __ATOMIC_RELAXED) >> 32) + 1;
    __atomic_store_n(&pool.fn, fn, __ATOMIC_RELAXED);
    __atomic_store_n(&pool.ctx, ctx, __ATOMIC_RELAXED);
    __atomic_store_n(&pool.items, items, __ATOMIC_RELAXED);
    __atomic_store_n(&pool.threads, threads, __ATOMIC_RELAXED);
    __atomic_store_n(&pool.done, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&pool.counter, sequence << 32, __ATOMIC_RELEASE);
    __atomic_store_n(&pool.generation, (uint32_t)sequence, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&pool.sleepers, __ATOMIC_SEQ_CST) > 0) wake_all();
    /* The caller takes items like any worker (it can use fetch-add: the job is its own). */
    int64_t finished = 0;
    for (;;) {
        const int64_t item = (int64_t)(uint32_t)__atomic_fetch_add(&pool.counter, 1, __ATOMIC_ACQ_REL);
        if (item >= items) break;
        fn(ctx, item, 0);
        ++finished;
    }
    __atomic_add_fetch(&pool.done, finished, __ATOMIC_RELEASE);
    /* Only items another thread has started remain: wait for those. */
    for (int spins = 0; __atomic_load_n(&pool.done, __ATOMIC_ACQUIRE) < items; ++spins) {
        if (spins < SPIN_ROUNDS) cpu_relax();
        else sched_yield();
    }
    pthread_mutex_unlock(&pool.caller);
}

float **bitfx_thread_scratch(int64_t threads, size_t bytes, size_t zeroed) {
    float **scratch = calloc((size_t)threads, sizeof(float *));
    for (int64_t i = 0; scratch && i < threads; ++i) {
        scratch[i] = aligned_alloc(64, (bytes + 63) / 64 * 64);
        if (!scratch[i]) {
            bitfx_free_thread_scratch(scratch, threads);
            return 0;
        }
        memset(scratch[i], 0, zeroed);
    }
    return scratch;
}

void bitfx_free_thread_scratch(float **scratch, int64_t threads) {
    for (int64_t i = 0; scratch && i < threads; ++i) free(scratch[i]);
    free(scratch);
}
