/* The fixed cost of an OpenMP region run by one thread: what prange(..., use_threads_if=False)
   costs per call, against a plain loop. fastnn keeps serial and parallel loops as twins where
   calls are small enough for this cost to show (benchmarks/README.md, "Parallel thresholds").

       cc -O2 -fopenmp benchmarks/omp_region_cost.c -o /tmp/omp_region_cost && /tmp/omp_region_cost
*/
#include <stdio.h>
#include <omp.h>
volatile int sink;
int main(int argc, char **argv) {
  int cond = argc > 5, R = 2000000;   /* false, but unknown to the compiler (a run-time count) */
  double t0 = omp_get_wtime();
  for (int r = 0; r < R; r++) {
    #pragma omp parallel if(cond) num_threads(2)
    { sink = omp_get_thread_num(); }
  }
  double t1 = omp_get_wtime();
  printf("one-thread region (if(0)): %.3f us per call\n", (t1 - t0) / R * 1e6);
  return 0;
}
