/* CPU kernel of arnas_ray.space._kernels (float32, channels_last memory, AVX2 + FMA):
 * dw_grad_weight, the weight gradient of a depthwise convolution,
 *   gw[c, i, j] = sum over n, oh, ow of go[n, oh, ow, c] * x[n, oh*s - p + i*d, ow*s - p + j*d, c]
 *
 * (taps outside the input read zero). x is [N, H, W, C], go [N, OH, OW, C], gw [C, k, k].
 * Eight channels at a time in AVX2 registers: for every output row and kernel row, the output
 * gradient vector of a pixel is loaded once and multiplied into the k taps of that row. Threads
 * split the channel blocks (each writes its own channels: no reduction between threads). Built
 * with OpenMP, they are the threads of the OpenMP runtime already loaded in the process
 * (PyTorch's libgomp.so.1): its workers spin after every PyTorch operation, and threads of our
 * own would compete with them for the cores. Without OpenMP, POSIX threads.
 *
 * Sums are in float32, in a different order than oneDNN's: equal up to rounding.
 */
#include <immintrin.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* run fn(arg, begin, end) on [0, total) split into `threads` contiguous ranges (one per thread) */
typedef void (*range_fn)(void *arg, int64_t begin, int64_t end);
#ifdef _OPENMP
#include <omp.h>
static void parallel(range_fn fn, void *arg, int64_t total, int64_t threads) {
    if (threads > total) threads = total;
    if (threads <= 1) { if (total > 0) fn(arg, 0, total); return; }
#pragma omp parallel num_threads((int)threads)
    {
        const int64_t t = omp_get_thread_num(), n = omp_get_num_threads();
        const int64_t begin = total * t / n, end = total * (t + 1) / n;
        if (begin < end) fn(arg, begin, end);
    }
}
#else
typedef struct { range_fn fn; void *arg; int64_t begin, end; } range_t;
static void *run_range(void *r) { range_t *t = (range_t *)r; t->fn(t->arg, t->begin, t->end); return NULL; }
static void parallel(range_fn fn, void *arg, int64_t total, int64_t threads) {
    if (threads > total) threads = total;
    if (threads > 64) threads = 64;
    if (threads <= 1) { if (total > 0) fn(arg, 0, total); return; }
    range_t jobs[64];
    pthread_t ids[64];
    int started[64] = {0};
    for (int64_t t = 0; t < threads; ++t) {
        jobs[t] = (range_t){fn, arg, total * t / threads, total * (t + 1) / threads};
        if (t > 0) started[t] = pthread_create(&ids[t], NULL, run_range, &jobs[t]) == 0;
    }
    run_range(&jobs[0]);
    for (int64_t t = 1; t < threads; ++t) {
        if (started[t]) pthread_join(ids[t], NULL);
        else run_range(&jobs[t]); /* no thread: its share runs here */
    }
}
#endif

typedef struct {
    const float *x, *go;
    float *acc; /* [C / 8][k * k][8] */
    int64_t N, H, W, C, OH, OW, k, s, p, d;
} job_t;

/* acc[j] += sum over ow of go[ow] * x[ow*s - p + j*d], j < K, for one output row and kernel row */
#define ROW(NAME, K)                                                                               \
    static void NAME(const float *xr, const float *gr, float *ac, int64_t W, int64_t C, int64_t OW, \
                     int64_t s, int64_t p, int64_t d, int64_t k) {                                  \
        const int64_t kk = (K) > 0 ? (K) : k;                                                       \
        int64_t lo = (p + s - 1) / s, last = W - 1 - (kk - 1) * d + p;                              \
        int64_t hi = last < 0 ? 0 : last / s + 1;                                                   \
        if (hi > OW) hi = OW;                                                                       \
        if (lo > hi) lo = hi;                                                                       \
        __m256 a[(K) > 0 ? (K) : 16];                                                               \
        for (int64_t j = 0; j < kk; ++j) a[j] = _mm256_load_ps(ac + j * 8);                         \
        for (int64_t ow = lo; ow < hi; ++ow) { /* every tap inside the input */                     \
            const __m256 g = _mm256_loadu_ps(gr + ow * C);                                          \
            const float *xp = xr + (ow * s - p) * C;                                                \
            for (int64_t j = 0; j < kk; ++j)                                                        \
                a[j] = _mm256_fmadd_ps(g, _mm256_loadu_ps(xp + j * d * C), a[j]);                   \
        }                                                                                           \
        for (int64_t ow = 0; ow < OW; ++ow) { /* the borders, taps checked */                       \
            if (ow >= lo && ow < hi) continue;                                                      \
            const __m256 g = _mm256_loadu_ps(gr + ow * C);                                          \
            for (int64_t j = 0; j < kk; ++j) {                                                      \
                const int64_t iw = ow * s - p + j * d;                                              \
                if (iw >= 0 && iw < W) a[j] = _mm256_fmadd_ps(g, _mm256_loadu_ps(xr + iw * C), a[j]); \
            }                                                                                       \
        }                                                                                           \
        for (int64_t j = 0; j < kk; ++j) _mm256_store_ps(ac + j * 8, a[j]);                         \
    }
ROW(row3, 3)
ROW(row5, 5)
ROW(row_any, 0) /* k <= 16 */

static void run_blocks(void *arg, int64_t b0, int64_t b1) { /* channel blocks b0 .. b1 - 1 */
    const job_t *t = (const job_t *)arg;
    const int64_t k = t->k, C = t->C;
    for (int64_t n = 0; n < t->N; ++n)
        for (int64_t oh = 0; oh < t->OH; ++oh)
            for (int64_t i = 0; i < k; ++i) {
                const int64_t ih = oh * t->s - t->p + i * t->d;
                if (ih < 0 || ih >= t->H) continue;
                for (int64_t c0 = 8 * b0; c0 < 8 * b1; c0 += 8) {
                    const float *gr = t->go + (n * t->OH + oh) * t->OW * C + c0;
                    const float *xr = t->x + (n * t->H + ih) * t->W * C + c0;
                    float *ac = t->acc + (c0 / 8 * k * k + i * k) * 8;
                    if (k == 5) row5(xr, gr, ac, t->W, C, t->OW, t->s, t->p, t->d, k);
                    else if (k == 3) row3(xr, gr, ac, t->W, C, t->OW, t->s, t->p, t->d, k);
                    else row_any(xr, gr, ac, t->W, C, t->OW, t->s, t->p, t->d, k);
                }
            }
}

/* returns 0, or -1 when k > 16 or memory runs out (gw untouched then) */
int dw_grad_weight(const float *x, const float *go, float *gw, int64_t N, int64_t H, int64_t W, int64_t C,
                   int64_t OH, int64_t OW, int64_t k, int64_t s, int64_t p, int64_t d, int64_t threads) {
    if (k > 16) return -1;
    const int64_t blocks = C / 8, cb_end = blocks * 8;
    float *acc = NULL;
    if (blocks && posix_memalign((void **)&acc, 32, sizeof(float) * blocks * k * k * 8)) return -1;
    if (blocks) memset(acc, 0, sizeof(float) * blocks * k * k * 8);
    job_t job = {x, go, acc, N, H, W, C, OH, OW, k, s, p, d};
    parallel(run_blocks, &job, blocks, threads);
    for (int64_t c0 = 0; c0 < cb_end; c0 += 8)
        for (int64_t tap = 0; tap < k * k; ++tap)
            for (int64_t c = 0; c < 8; ++c) gw[(c0 + c) * k * k + tap] = acc[(c0 / 8 * k * k + tap) * 8 + c];
    free(acc);
    for (int64_t c = cb_end; c < C; ++c) /* the last C % 8 channels, scalar */
        for (int64_t i = 0; i < k; ++i)
            for (int64_t j = 0; j < k; ++j) {
                float sum = 0.f;
                for (int64_t n = 0; n < N; ++n)
                    for (int64_t oh = 0; oh < OH; ++oh) {
                        const int64_t ih = oh * s - p + i * d;
                        if (ih < 0 || ih >= H) continue;
                        for (int64_t ow = 0; ow < OW; ++ow) {
                            const int64_t iw = ow * s - p + j * d;
                            if (iw >= 0 && iw < W)
                                sum += go[((n * OH + oh) * OW + ow) * C + c] * x[((n * H + ih) * W + iw) * C + c];
                        }
                    }
                gw[(c * k + i) * k + j] = sum;
            }
    return 0;
}

