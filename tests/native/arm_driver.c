/* The AArch64 test driver of the packed runtime (built and run under qemu-aarch64 by tests/native/arm_check.py).
 *
 * Reads the kernel calls recorded by tests/native/arm_cases.py and runs each one on this machine's
 * scalar path (1 thread) and NEON path (1 and 2 threads), from the same inputs and the same
 * poisoned output buffer. Outputs of the scalar path must equal the recording machine's (x86-64
 * scalar) output and the NEON outputs must equal the scalar path's: bit for bit, except for the
 * float convolutions (NEON sums with fused multiply-adds), whose outputs must agree within
 * TOLERANCE × the largest magnitude of the output. Also runs the popcount peak loop on both paths.
 * Prints one line per entry point and exits non-zero on the first disagreement.
 *
 * Usage: arm_driver CASES_FILE
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitfx_kernels.h"

#define TOLERANCE 1e-4
#define MAX_ARGS 16

/* The recorded entry points, in the order of enum bitfx_call_kernel (the cases name them by it). */
static const char *const FUNCTIONS[] = {"bitfx_pack",           "bitfx_fill_border", "bitfx_binary_conv",
                                        "bitfx_binary_maxpool", "bitfx_float_conv",  "bitfx_float_maxpool",
                                        "bitfx_float_conv_maxpool", "bitfx_float_gemm", "bitfx_int8_conv",
                                        "bitfx_global_avgpool"};
enum { FUNCTION_COUNT = BITFX_CALL_KINDS };
_Static_assert(sizeof FUNCTIONS / sizeof FUNCTIONS[0] == BITFX_CALL_KINDS, "one name per call kind");

typedef struct {
    void *data; /* null for a null pointer argument */
    int64_t bytes;
} blob;

typedef struct {
    int64_t function, exact, count;
    blob args[MAX_ARGS];
    blob expected;
} kernel_case;

static FILE *input;

static int64_t read_word(void) {
    int64_t v;
    if (fread(&v, sizeof v, 1, input) != 1) {
        fprintf(stderr, "arm_driver: the cases file ends early\n");
        exit(2);
    }
    return v;
}

static blob read_blob(void) {
    blob b = {0, read_word()};
    if (b.bytes < 0) return (blob){0, 0};
    const size_t padded = (size_t)(b.bytes + 7) / 8 * 8;
    b.data = aligned_alloc(64, padded + 64);
    if (!b.data || fread(b.data, 1, padded, input) != padded) {
        fprintf(stderr, "arm_driver: cannot read an argument of %lld bytes\n", (long long)b.bytes);
        exit(2);
    }
    return b;
}

static kernel_case read_case(void) {
    kernel_case c = {read_word(), read_word(), read_word(), {{0}}, {0}};
    if (c.function < 0 || c.function >= FUNCTION_COUNT || c.count < 1 || c.count > MAX_ARGS) {
        fprintf(stderr, "arm_driver: malformed case (function %lld, %lld arguments)\n", (long long)c.function, (long long)c.count);
        exit(2);
    }
    for (int64_t i = 0; i < c.count; ++i) c.args[i] = read_blob();
    c.expected = read_blob();
    return c;
}

/* Runs the case's call with the current ISA and thread count, its output written into `out` (a copy
 * of the recorded output argument, poison included), through the library's own call table. */
static int run(const kernel_case *c, void *out) {
    bitfx_call call = {c->function, {0}};
    if (c->count > BITFX_CALL_ARGS) return BITFX_ERR_ARGUMENT;
    for (int64_t i = 0; i < c->count; ++i) call.args[i] = c->args[i].data;
    call.args[c->count - 1] = out;
    int64_t failed;
    return bitfx_run_calls(&call, 1, &failed);
}

/* The largest |got − want| over the floats, or −1 when `exact` and the bytes differ (0 when equal). */
static double difference(const void *got, const void *want, int64_t bytes, int exact, double *scale) {
    if (exact) return memcmp(got, want, (size_t)bytes) ? -1 : 0;
    const float *g = got, *w = want;
    double worst = 0;
    *scale = 1;
    for (int64_t i = 0; i < bytes / 4; ++i) {
        if (isnan(g[i]) != isnan(w[i])) return INFINITY;
        worst = fmax(worst, fabs((double)g[i] - w[i]));
        *scale = fmax(*scale, fabs((double)w[i]));
    }
    return worst;
}

/* 0 when `got` matches `want` under the case's rule, else prints why and returns 1. */
static int check(const kernel_case *c, int64_t index, const char *what, const void *got, const void *want) {
    double scale = 1;
    const double diff = difference(got, want, c->expected.bytes, (int)c->exact, &scale);
    if (diff == 0 || (!c->exact && diff <= TOLERANCE * scale)) return 0;
    fprintf(stderr, "FAIL case %lld (%s): %s differ", (long long)index, FUNCTIONS[c->function], what);
    if (c->exact) {
        const unsigned char *g = got, *w = want;
        int64_t first = 0;
        while (g[first] == w[first]) ++first;
        fprintf(stderr, " from byte %lld of %lld\n", (long long)first, (long long)c->expected.bytes);
    } else {
        fprintf(stderr, " by %g (tolerance %g)\n", diff, TOLERANCE * scale);
    }
    return 1;
}

/* Output of the case with `isa` at `threads` threads into `out`; 1 (and a message) if the call fails. */
static int run_with(const kernel_case *c, int64_t index, int64_t isa, int64_t threads, void *out) {
    bitfx_set_isa(isa);
    bitfx_set_threads(threads);
    memcpy(out, c->args[c->count - 1].data, (size_t)c->expected.bytes);
    const int status = run(c, out);
    if (status != BITFX_OK) fprintf(stderr, "FAIL case %lld (%s): status %d\n", (long long)index, FUNCTIONS[c->function], status);
    return status != BITFX_OK;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: arm_driver CASES_FILE\n");
        return 2;
    }
    input = fopen(argv[1], "rb");
    char magic[8];
    if (!input || fread(magic, 1, 8, input) != 8 || memcmp(magic, "BITFXARM", 8)) {
        fprintf(stderr, "arm_driver: %s is not a cases file\n", argv[1]);
        return 2;
    }
    if (bitfx_best_isa() != BITFX_ISA_NEON || !bitfx_isa_supported(BITFX_ISA_NEON) || bitfx_isa_supported(BITFX_ISA_AVX2)) {
        fprintf(stderr, "arm_driver: NEON is not this machine's best ISA (best %lld)\n", (long long)bitfx_best_isa());
        return 1;
    }
    const int64_t cases = read_word();
    int64_t counts[FUNCTION_COUNT] = {0}, inexact[FUNCTION_COUNT] = {0};
    int failures = 0;
    for (int64_t i = 0; i < cases && !failures; ++i) {
        kernel_case c = read_case();
        const size_t bytes = (size_t)c.expected.bytes + 64;
        void *scalar = aligned_alloc(64, bytes), *neon = aligned_alloc(64, bytes), *neon2 = aligned_alloc(64, bytes);
        if (!scalar || !neon || !neon2) return 2;
        failures += run_with(&c, i, BITFX_ISA_SCALAR, 1, scalar) || run_with(&c, i, BITFX_ISA_NEON, 1, neon) ||
                    run_with(&c, i, BITFX_ISA_NEON, 2, neon2);
        if (!failures) {
            failures += check(&c, i, "scalar (aarch64) and scalar (recording machine)", scalar, c.expected.data);
            failures += check(&c, i, "neon (1 thread) and scalar", neon, scalar);
            failures += check(&c, i, "neon (2 threads) and neon (1 thread)", neon2, neon);
        }
        counts[c.function] += 1;
        inexact[c.function] += !c.exact;
        for (int64_t a = 0; a < c.count; ++a) free(c.args[a].data);
        free(c.expected.data);
        free(scalar);
        free(neon);
        free(neon2);
    }
    for (int f = 0; f < FUNCTION_COUNT; ++f)
        printf("%-26s %4lld calls: neon = scalar %s\n", FUNCTIONS[f], (long long)counts[f],
               inexact[f] ? "within 1e-4 of the output's largest magnitude" : "bit for bit");
    for (int64_t isa = BITFX_ISA_SCALAR; isa <= BITFX_ISA_NEON; isa += BITFX_ISA_NEON) {
        bitfx_set_isa(isa);
        bitfx_set_threads(1);
        const double work = bitfx_popcount_peak(1000);
        printf("bitfx_popcount_peak (%s)     %g bit-MACs in 1000 rounds\n", isa ? "neon" : "scalar", work);
        if (!(work > 0)) ++failures;
    }
    printf("%s: %lld recorded calls, %d failure(s)\n", failures ? "FAILED" : "OK", (long long)cases, failures);
    return failures ? 1 : 0;
}
