/* bitfx_run_calls: a table of prepared kernel calls run by one call from Python, so a plan's
 * consecutive kernel steps cost one ctypes round trip instead of one each. */
#include "bitfx_kernels.h"

static int run_call(const bitfx_call *call) {
    const void *const *a = call->args;
    switch (call->kernel) {
    case BITFX_CALL_PACK:
        return bitfx_pack(a[0], a[1], (uint64_t *)a[2]);
    case BITFX_CALL_FILL_BORDER:
        return bitfx_fill_border(a[0], a[1], (uint64_t *)a[2]);
    case BITFX_CALL_BINARY_CONV:
        return bitfx_binary_conv(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], (void *)a[11]);
    case BITFX_CALL_BINARY_MAXPOOL:
        return bitfx_binary_maxpool(a[0], a[1], (uint64_t *)a[2]);
    case BITFX_CALL_FLOAT_CONV:
        return bitfx_float_conv(a[0], a[1], a[2], a[3], a[4], a[5], a[6], (float *)a[7]);
    case BITFX_CALL_FLOAT_MAXPOOL:
        return bitfx_float_maxpool(a[0], a[1], (float *)a[2]);
    case BITFX_CALL_FLOAT_CONV_MAXPOOL:
        return bitfx_float_conv_maxpool(a[0], a[1], a[2], a[3], a[4], a[5], a[6], (float *)a[7]);
    case BITFX_CALL_FLOAT_GEMM:
        return bitfx_float_gemm(a[0], a[1], a[2], a[3], (float *)a[4]);
    case BITFX_CALL_INT8_CONV:
        return bitfx_int8_conv(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], (float *)a[8]);
    case BITFX_CALL_GLOBAL_AVGPOOL:
        return bitfx_global_avgpool(a[0], a[1], (float *)a[2]);
    default:
        return BITFX_ERR_ARGUMENT;
    }
}

int bitfx_run_calls(const bitfx_call *calls, int64_t count, int64_t *failed) {
    if (!calls || !failed || count < 0) return BITFX_ERR_ARGUMENT;
    for (int64_t i = 0; i < count; ++i) {
        const int status = run_call(&calls[i]);
        if (status != BITFX_OK) {
            *failed = i;
            return status;
        }
    }
    *failed = count;
    return BITFX_OK;
}
