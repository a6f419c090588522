# Design: one OpenMP shim for every kernel. A build without OpenMP still compiles and imports:
# the omp_* functions fall back to a single thread and Cython's prange runs sequentially.

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define FASTNN_OPENMP 1
    #else
    #define FASTNN_OPENMP 0
    static int omp_get_max_threads(void) { return 1; }
    static int omp_get_thread_num(void) { return 0; }
    static int omp_get_num_threads(void) { return 1; }
    static int omp_in_parallel(void) { return 0; }
    #endif
    """
    bint FASTNN_OPENMP
    int omp_get_max_threads() noexcept nogil
    int omp_get_thread_num() noexcept nogil
    int omp_get_num_threads() noexcept nogil
    int omp_in_parallel() noexcept nogil


cdef inline int row_threads(Py_ssize_t n_rows, Py_ssize_t n_cols, int n_threads,
                            Py_ssize_t par_min) noexcept nogil:
    # Threads for a prange over rows: 1 (serial) below par_min elements or for a single row,
    # else n_threads capped at the number of rows.
    if n_threads <= 1 or n_rows < 2 or n_rows * n_cols < par_min:
        return 1
    return n_threads if n_threads < n_rows else <int>n_rows
