# Design: argument checks through NumPy's C API for the kernels' module entry points (the
# layers and losses call them on every batch). A typed-memoryview argument costs ~0.5 us to
# acquire and a fused def function ~0.5 us to dispatch; these checks cost a few nanoseconds
# each. A check that fails makes the entry point return False without touching anything, and
# the caller falls back to its validating Python path, which converts or raises a clear error.
# Modules that cimport this file call cnp.import_array() once at import.
cimport numpy as cnp


cdef inline bint c_array(object a, int typenum, int ndim, bint writeable) noexcept:
    """a is a plain ndarray of NumPy type typenum in native byte order and ndim dimensions,
    C-contiguous and aligned (and writeable when asked)."""
    cdef cnp.ndarray arr
    if type(a) is not cnp.ndarray:
        return False
    arr = <cnp.ndarray> a
    return (cnp.PyArray_TYPE(arr) == typenum and cnp.PyArray_NDIM(arr) == ndim
            and cnp.PyArray_IS_C_CONTIGUOUS(arr) and cnp.PyArray_ISALIGNED(arr)
            and cnp.PyArray_ISNOTSWAPPED(arr)
            and (not writeable or cnp.PyArray_ISWRITEABLE(arr)))


cdef inline Py_ssize_t dim(object a, int i) noexcept:
    """Length of axis i of an array that passed c_array."""
    return cnp.PyArray_DIM(<cnp.ndarray> a, i)


cdef inline void *data(object a) noexcept:
    """Data pointer of an array that passed c_array (NULL when it is empty)."""
    if cnp.PyArray_SIZE(<cnp.ndarray> a) == 0:
        return NULL
    return cnp.PyArray_DATA(<cnp.ndarray> a)


cdef inline bint overlap(object a, object b) noexcept:
    """The memory of two arrays that passed c_array intersects (empty arrays never do)."""
    cdef char *pa
    cdef char *pb
    cdef Py_ssize_t na = cnp.PyArray_NBYTES(<cnp.ndarray> a)
    cdef Py_ssize_t nb = cnp.PyArray_NBYTES(<cnp.ndarray> b)
    if na == 0 or nb == 0:
        return False
    pa = <char *> cnp.PyArray_DATA(<cnp.ndarray> a)
    pb = <char *> cnp.PyArray_DATA(<cnp.ndarray> b)
    return pa < pb + nb and pb < pa + na


cdef inline int float_type(object a) noexcept:
    """NPY_FLOAT32 or NPY_FLOAT64 for a plain float32/float64 ndarray in native byte order,
    else -1."""
    cdef int t
    if type(a) is not cnp.ndarray or not cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray> a):
        return -1
    t = cnp.PyArray_TYPE(<cnp.ndarray> a)
    return t if t == cnp.NPY_FLOAT32 or t == cnp.NPY_FLOAT64 else -1


cdef inline bint same_shape(object a, object b) noexcept:
    """Two arrays that passed c_array have the same shape."""
    cdef int k, nd = cnp.PyArray_NDIM(<cnp.ndarray> a)
    if cnp.PyArray_NDIM(<cnp.ndarray> b) != nd:
        return False
    for k in range(nd):
        if cnp.PyArray_DIM(<cnp.ndarray> a, k) != cnp.PyArray_DIM(<cnp.ndarray> b, k):
            return False
    return True
