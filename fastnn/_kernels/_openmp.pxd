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
