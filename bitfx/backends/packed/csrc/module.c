/* Makes the kernel library an importable extension module, so the normal package machinery
 * finds and installs it. The kernels themselves are called through ctypes (see _native.py). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_kernels",
    .m_doc = "bitfx packed-bit kernels (C); called through ctypes by bitfx.backends.packed._native.",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&module); }
