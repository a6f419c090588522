/* Cache-line ping-pong between two threads: the round-trip time of one cache line bounced
 * between two CPUs. Built at run time by benchmarks/placement.py (system C compiler, loaded
 * with ctypes); not part of the fastnn package.
 *
 * Rules: thread A writes 2i+1 and waits for 2i+2, thread B waits for 2i+1 and writes 2i+2, so
 * every round trip moves the line to B and back. Both threads spin (no pause, no yield) so the
 * time is the transfer latency, not a wake-up. Round trips are timed in chunks of CHUNK and the
 * median chunk is reported, so a chunk in which a thread was descheduled does not count. A
 * wall-clock budget bounds the run: when a thread cannot run (another process holds its CPU)
 * the probe stops at the budget instead of hanging.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHUNK 32        /* round trips timed together */
#define MAX_CHUNKS 4096

typedef struct {
    _Alignas(64) atomic_long ball;
    char pad1[64 - sizeof(atomic_long)];
    _Alignas(64) atomic_int stop;
    long max_round_trips;
    double budget_ns;
    int cpu_a, cpu_b;
    int n_chunks;
    double chunk_ns[MAX_CHUNKS];
} pp_state;

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

static void pin(int cpu) {
    if (cpu < 0) return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof(set), &set);  /* best effort */
}

static void *player_b(void *arg) {
    pp_state *s = (pp_state *)arg;
    pin(s->cpu_b);
    for (long i = 0;; i++) {
        long want = 2 * i + 1;
        while (atomic_load_explicit(&s->ball, memory_order_acquire) != want) {
            if (atomic_load_explicit(&s->stop, memory_order_relaxed)) return NULL;
        }
        atomic_store_explicit(&s->ball, want + 1, memory_order_release);
    }
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void *player_a(void *arg) {
    pp_state *s = (pp_state *)arg;
    pin(s->cpu_a);
    /* one warm-up exchange so both threads run before the clock starts */
    atomic_store_explicit(&s->ball, 1, memory_order_release);
    double deadline = now_ns() + s->budget_ns;
    while (atomic_load_explicit(&s->ball, memory_order_acquire) != 2) {
        if (now_ns() > deadline) { atomic_store(&s->stop, 1); return NULL; }
    }
    double t0 = now_ns();
    deadline = t0 + s->budget_ns;
    long i = 1;
    int chunk = 0;
    double t_chunk = t0;
    while (chunk < MAX_CHUNKS && i <= s->max_round_trips) {
        long serve = 2 * i + 1;
        atomic_store_explicit(&s->ball, serve, memory_order_release);
        unsigned spins = 0;
        while (atomic_load_explicit(&s->ball, memory_order_acquire) != serve + 1) {
            if ((++spins & 1023u) == 0 && now_ns() > deadline) goto out;
        }
        if (i % CHUNK == 0) {
            double t = now_ns();
            s->chunk_ns[chunk++] = (t - t_chunk) / CHUNK;
            t_chunk = t;
            if (t > deadline) break;
        }
        i++;
    }
out:
    s->n_chunks = chunk;
    atomic_store(&s->stop, 1);
    return NULL;
}

/* Median ns per round trip between cpu_a and cpu_b (-1: not pinned) over chunks of CHUNK
 * round trips, for at most max_round_trips or budget_s seconds. Writes the median and the
 * number of chunks timed; returns 0, or -1 when a thread could not be started, or -2 when not
 * one chunk completed within the budget. */
int fastnn_pingpong(long max_round_trips, double budget_s, int cpu_a, int cpu_b,
                    double *ns_per_round_trip, long *chunks) {
    static pp_state s;   /* large and over-aligned: not on the stack; one probe at a time */
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&lock);
    memset(&s, 0, sizeof(s));
    atomic_init(&s.ball, 0);
    atomic_init(&s.stop, 0);
    s.max_round_trips = max_round_trips;
    s.budget_ns = budget_s * 1e9;
    s.cpu_a = cpu_a;
    s.cpu_b = cpu_b;
    pthread_t ta, tb;
    int rc = 0;
    if (pthread_create(&tb, NULL, player_b, &s) != 0) { rc = -1; goto done; }
    if (pthread_create(&ta, NULL, player_a, &s) != 0) {
        atomic_store(&s.stop, 1);
        pthread_join(tb, NULL);
        rc = -1;
        goto done;
    }
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    *chunks = s.n_chunks;
    if (s.n_chunks <= 0) { rc = -2; goto done; }
    qsort(s.chunk_ns, (size_t)s.n_chunks, sizeof(double), cmp_double);
    *ns_per_round_trip = s.chunk_ns[s.n_chunks / 2];
done:
    pthread_mutex_unlock(&lock);
    return rc;
}
