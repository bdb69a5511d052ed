/* CPU kernels of arnas_ray.space._kernels (float32, channels_last memory, AVX2 + FMA):
 * bn_forward / bn_backward, training-mode batch norm (at the end of this file), and
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
#include <math.h>
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


/* ---- training-mode batch norm of x [M, C] (channels_last rows, M = N*H*W, C % 8 == 0) ----
 * Statistics are per channel over the M rows: the mean, then the biased variance as the mean
 * of (x - mean)^2 (two passes, as PyTorch's kernel). Sums run in float32 vectors over blocks
 * of BN_BLOCK rows and are added up in double. Threads split the rows; each sums into its own
 * buffer, and the buffers are added in thread order (the result does not depend on timing).
 * Eight channels per AVX2 register, up to 32 channels at a time in registers; the kernels
 * serve narrow tensors (PyTorch's own channels_last kernels are 3-4x slower at 8-32 channels).
 * With `relu`, the forward writes max(0, y) (a ReLU fused into the batch norm) and the backward
 * takes that output as a mask: the output gradient counts where it is not <= 0, as PyTorch's
 * threshold_backward (NaN outputs pass their gradient). */
#define BN_BLOCK 128
enum { BN_SUM, BN_SQ, BN_GRAD, BN_GRADM };
typedef struct {
    const float *x, *dy, *mean, *a, *c, *k;
    float *out;
    double *acc; /* [threads][2 * C] */
    int64_t M, C, threads;
    int mode;
    const float *mask; /* BN_GRADM, and bn_rows with dy: dy counts where mask is not <= 0 */
    int relu;          /* bn_rows without dy: max(0, out) */
} bn_job_t;

/* dy where the ReLU output y is not <= 0 (NaN included), else 0 */
static inline __m256 bn_masked(__m256 dy, const float *y) {
    return _mm256_and_ps(dy, _mm256_cmp_ps(_mm256_loadu_ps(y), _mm256_setzero_ps(), _CMP_NLE_UQ));
}

/* one row's contribution to the sums of channels c0 .. c0 + 8 * nv */
#define BN_ROW(MODE, P, G, Y, A, A2)                                                               \
    for (int v = 0; v < nv; ++v) {                                                                 \
        const __m256 u = _mm256_sub_ps(_mm256_loadu_ps((P) + 8 * v), m[v]);                       \
        if ((MODE) == BN_SUM) A[v] = _mm256_add_ps(A[v], u);                                       \
        else if ((MODE) == BN_SQ) A[v] = _mm256_fmadd_ps(u, u, A[v]);                              \
        else {                                                                                     \
            const __m256 gv = (MODE) == BN_GRADM ? bn_masked(_mm256_loadu_ps((G) + 8 * v), (Y) + 8 * v) \
                                                 : _mm256_loadu_ps((G) + 8 * v);                   \
            A[v] = _mm256_add_ps(A[v], gv);                                                        \
            A2[v] = _mm256_fmadd_ps(gv, u, A2[v]);                                                 \
        }                                                                                          \
    }

static inline __attribute__((always_inline)) void bn_chunk(const float *x, const float *dy, const float *y,
                                                           const float *mean, int64_t r0, int64_t r1, int64_t C,
                                                           int64_t c0, int nv, const int mode, double *s, double *s2) {
    __m256 m[4], a[4], b[4], a2[4], b2[4];
    for (int v = 0; v < nv; ++v) m[v] = mean ? _mm256_loadu_ps(mean + c0 + 8 * v) : _mm256_setzero_ps();
    for (int64_t r = r0; r < r1; r += BN_BLOCK) {
        const int64_t e = r + BN_BLOCK < r1 ? r + BN_BLOCK : r1;
        for (int v = 0; v < nv; ++v) a[v] = b[v] = a2[v] = b2[v] = _mm256_setzero_ps();
        int64_t i = r;
        for (; i + 1 < e; i += 2) { /* two rows at a time: two independent sums */
            const float *p = x + i * C + c0, *gp = mode >= BN_GRAD ? dy + i * C + c0 : p;
            const float *yp = mode == BN_GRADM ? y + i * C + c0 : p;
            BN_ROW(mode, p, gp, yp, a, a2)
            BN_ROW(mode, p + C, gp + C, yp + C, b, b2)
        }
        if (i < e) {
            const float *p = x + i * C + c0, *gp = mode >= BN_GRAD ? dy + i * C + c0 : p;
            const float *yp = mode == BN_GRADM ? y + i * C + c0 : p;
            BN_ROW(mode, p, gp, yp, a, a2)
        }
        for (int v = 0; v < nv; ++v) {
            float u[8], w[8];
            _mm256_storeu_ps(u, _mm256_add_ps(a[v], b[v]));
            _mm256_storeu_ps(w, _mm256_add_ps(a2[v], b2[v]));
            for (int j = 0; j < 8; ++j) { s[c0 + 8 * v + j] += u[j]; s2[c0 + 8 * v + j] += w[j]; }
        }
    }
}

static void bn_chunks(const float *x, const float *dy, const float *y, const float *mean, int64_t r0, int64_t r1,
                      int64_t C, const int mode, double *s, double *s2) {
    for (int64_t r = r0; r < r1; r += BN_BLOCK) { /* a block of rows stays in cache for all its chunks */
        const int64_t e = r + BN_BLOCK < r1 ? r + BN_BLOCK : r1;
        for (int64_t c0 = 0; c0 < C; c0 += 32) {
            const int64_t left = (C - c0) / 8;
            if (left >= 4) bn_chunk(x, dy, y, mean, r, e, C, c0, 4, mode, s, s2);
            else if (left == 3) bn_chunk(x, dy, y, mean, r, e, C, c0, 3, mode, s, s2);
            else if (left == 2) bn_chunk(x, dy, y, mean, r, e, C, c0, 2, mode, s, s2);
            else bn_chunk(x, dy, y, mean, r, e, C, c0, 1, mode, s, s2);
        }
    }
}

static void bn_sums(void *arg, int64_t t0, int64_t t1) { /* thread slots t0 .. t1 - 1 */
    const bn_job_t *t = (const bn_job_t *)arg;
    for (int64_t k = t0; k < t1; ++k) {
        const int64_t r0 = t->M * k / t->threads, r1 = t->M * (k + 1) / t->threads;
        double *s = t->acc + k * 2 * t->C;
        if (t->mode == BN_SUM) bn_chunks(t->x, NULL, NULL, NULL, r0, r1, t->C, BN_SUM, s, s + t->C);
        else if (t->mode == BN_SQ) bn_chunks(t->x, NULL, NULL, t->mean, r0, r1, t->C, BN_SQ, s, s + t->C);
        else if (t->mode == BN_GRAD) bn_chunks(t->x, t->dy, NULL, t->mean, r0, r1, t->C, BN_GRAD, s, s + t->C);
        else bn_chunks(t->x, t->dy, t->mask, t->mean, r0, r1, t->C, BN_GRADM, s, s + t->C);
    }
}

static void bn_rows(void *arg, int64_t r0, int64_t r1) { /* out = x * a + c (+ dy * k), per channel */
    const bn_job_t *t = (const bn_job_t *)arg;
    const int64_t C = t->C;
    const float *x = t->x, *dy = t->dy, *a = t->a, *c = t->c, *k = t->k, *y = t->mask;
    float *out = t->out;
    const __m256 zero = _mm256_setzero_ps();
    if (dy && y)
        for (int64_t i = r0 * C; i < r1 * C; i += C)
            for (int64_t j = 0; j < C; j += 8)
                _mm256_storeu_ps(out + i + j, _mm256_fmadd_ps(bn_masked(_mm256_loadu_ps(dy + i + j), y + i + j),
                                 _mm256_loadu_ps(k + j),
                                 _mm256_fmadd_ps(_mm256_loadu_ps(x + i + j), _mm256_loadu_ps(a + j), _mm256_loadu_ps(c + j))));
    else if (dy)
        for (int64_t i = r0 * C; i < r1 * C; i += C)
            for (int64_t j = 0; j < C; j += 8)
                _mm256_storeu_ps(out + i + j, _mm256_fmadd_ps(_mm256_loadu_ps(dy + i + j), _mm256_loadu_ps(k + j),
                                 _mm256_fmadd_ps(_mm256_loadu_ps(x + i + j), _mm256_loadu_ps(a + j), _mm256_loadu_ps(c + j))));
    else if (t->relu) /* max(0, v) keeps a NaN v (the second operand is returned for NaN) */
        for (int64_t i = r0 * C; i < r1 * C; i += C)
            for (int64_t j = 0; j < C; j += 8)
                _mm256_storeu_ps(out + i + j, _mm256_max_ps(zero, _mm256_fmadd_ps(_mm256_loadu_ps(x + i + j),
                                 _mm256_loadu_ps(a + j), _mm256_loadu_ps(c + j))));
    else
        for (int64_t i = r0 * C; i < r1 * C; i += C)
            for (int64_t j = 0; j < C; j += 8)
                _mm256_storeu_ps(out + i + j, _mm256_fmadd_ps(_mm256_loadu_ps(x + i + j), _mm256_loadu_ps(a + j), _mm256_loadu_ps(c + j)));
}

/* the job's sums over all rows into s and s2 ([C] each, double), through t->acc (zeroed here) */
static void bn_reduce(bn_job_t *t, double *s, double *s2) {
    memset(t->acc, 0, sizeof(double) * (size_t)(t->threads * 2 * t->C));
    parallel(bn_sums, t, t->threads, t->threads);
    for (int64_t c = 0; c < t->C; ++c) {
        s[c] = s2[c] = 0.0;
        for (int64_t k = 0; k < t->threads; ++k) { s[c] += t->acc[k * 2 * t->C + c]; s2[c] += t->acc[k * 2 * t->C + t->C + c]; }
    }
}

/* scratch buffers live on the stack (a few KB): no heap blocks between the tensors' ones */
#define BN_MAX_C 1024
#define BN_MAX_THREADS 16
static int64_t bn_threads(int64_t threads, int64_t M) {
    if (threads > M / BN_BLOCK) threads = M / BN_BLOCK;
    if (threads > BN_MAX_THREADS) threads = BN_MAX_THREADS;
    return threads > 1 ? threads : 1;
}

/* y = (x - mean) * invstd * w + b (w, b may be NULL: 1 and 0), with relu max(0, y); writes mean
 * and invstd [C]. Returns 0, or -1 (C % 8 != 0 or C > BN_MAX_C: nothing written). */
int bn_forward(const float *x, float *y, const float *w, const float *b, float *mean, float *invstd, int64_t M,
               int64_t C, double eps, int64_t threads, int64_t relu) {
    if (C % 8 || C > BN_MAX_C || M < 1) return -1;
    threads = bn_threads(threads, M);
    double s[2 * C], acc[threads * 2 * C];
    float ac[2 * C];
    bn_job_t t = {x, NULL, NULL, NULL, NULL, NULL, y, acc, M, C, threads, BN_SUM, NULL, relu != 0};
    bn_reduce(&t, s, s + C);
    float *m = ac; /* the mean, then the scale a; ac + C: the shift c */
    for (int64_t c = 0; c < C; ++c) m[c] = (float)(s[c] / (double)M);
    t.mean = m;
    t.mode = BN_SQ;
    bn_reduce(&t, s, s + C);
    {
        for (int64_t c = 0; c < C; ++c) {
            const double is = 1.0 / sqrt(s[c] / (double)M + eps);
            mean[c] = m[c];
            invstd[c] = (float)is;
            m[c] = (float)(is * (w ? w[c] : 1.0));
            ac[C + c] = (float)((b ? b[c] : 0.0) - mean[c] * is * (w ? w[c] : 1.0));
        }
        t.a = ac;
        t.c = ac + C;
        parallel(bn_rows, &t, M, threads);
    }
    return 0;
}

/* Gradients of bn_forward for the output gradient dy [M, C]: dx (if not NULL), gw = sum dy * xhat
 * and gb = sum dy (each if not NULL); y (if not NULL) is the forward's ReLU output, whose mask
 * applies to dy first. Returns 0, or -1 (C % 8 != 0 or C > BN_MAX_C). */
int bn_backward(const float *dy, const float *x, const float *mean, const float *invstd, const float *w, float *dx,
                float *gw, float *gb, const float *y, int64_t M, int64_t C, int64_t threads) {
    if (C % 8 || C > BN_MAX_C || M < 1) return -1;
    threads = bn_threads(threads, M);
    double s[2 * C], acc[threads * 2 * C];
    float k[3 * C];
    bn_job_t t = {x, dy, mean, NULL, NULL, NULL, dx, acc, M, C, threads, y ? BN_GRADM : BN_GRAD, y, 0};
    bn_reduce(&t, s, s + C); /* s: sum dy; s + C: sum dy * (x - mean) (dy masked by y) */
    {
        for (int64_t c = 0; c < C; ++c) {
            const double is = invstd[c], wc = w ? w[c] : 1.0, sd = s[c], sx = s[C + c];
            if (gw) gw[c] = (float)(sx * is);
            if (gb) gb[c] = (float)sd;
            /* dx = is * w * (dy - sd / M - (x - mean) * is^2 * sx / M) = dy * k0 + x * k1 + k2 */
            k[c] = (float)(is * wc);
            k[C + c] = (float)(-is * is * is * wc * sx / (double)M);
            k[2 * C + c] = (float)(-is * wc * sd / (double)M + mean[c] * is * is * is * wc * sx / (double)M);
        }
        if (dx) {
            t.k = k;
            t.a = k + C;
            t.c = k + 2 * C;
            parallel(bn_rows, &t, M, threads);
        }
    }
    return 0;
}


/* ---- grouped 1x1 convolution of channels_last rows (stride 1, no padding, no bias) ----
 * x [M, G*Ci], y [M, G*Co]: y[r, g*Co + o] = sum_i w[g, o, i] * x[r, g*Ci + i]. pw_forward takes
 * PyTorch's weight [G*Co, Ci] and transposes it to [G][Ci][Co]; pw_grad_input is the same product
 * with the roles of Ci and Co swapped and the weight used as it is. Blocks of 4 rows by 16
 * outputs or 8 rows by 8 outputs (8 accumulators) per step of the reduction; threads split the rows. At the supernet's
 * widths (8-64 channels per group) PyTorch's (oneDNN's) grouped 1x1 convolutions run at a few
 * GB/s: per call they cost 2-4x these loops. */
#define PW_ROWS 8
typedef struct {
    const float *x, *wt, *gy;
    float *y;
    float *acc;
    int64_t M, G, Ci, Co;
} pw_job_t;

static inline __attribute__((always_inline)) void pw_tile(const float *x, const float *wt, float *y, int64_t ldx,
                                                          int64_t ldy, int64_t Ci, int64_t Co, const int R,
                                                          const int NV) {
    __m256 a[PW_ROWS][2]; /* R * NV <= 8 */
    for (int r = 0; r < R; ++r)
        for (int v = 0; v < NV; ++v) a[r][v] = _mm256_setzero_ps();
    for (int64_t i = 0; i < Ci; ++i) {
        __m256 w[2];
        for (int v = 0; v < NV; ++v) w[v] = _mm256_loadu_ps(wt + i * Co + 8 * v);
        for (int r = 0; r < R; ++r) {
            const __m256 b = _mm256_broadcast_ss(x + r * ldx + i);
            for (int v = 0; v < NV; ++v) a[r][v] = _mm256_fmadd_ps(b, w[v], a[r][v]);
        }
    }
    for (int r = 0; r < R; ++r)
        for (int v = 0; v < NV; ++v) _mm256_storeu_ps(y + r * ldy + 8 * v, a[r][v]);
}

static void pw_rows(void *arg, int64_t b0, int64_t b1) { /* row blocks b0 .. b1 - 1 */
    const pw_job_t *t = (const pw_job_t *)arg;
    const int64_t Ci = t->Ci, Co = t->Co, ldx = t->G * Ci, ldy = t->G * Co;
    for (int64_t b = b0; b < b1; ++b) {
        const int64_t r0 = b * PW_ROWS, R = t->M - r0 < PW_ROWS ? t->M - r0 : PW_ROWS;
        for (int64_t g = 0; g < t->G; ++g)
            for (int64_t o = 0; o < Co; o += 16) {
                const float *x = t->x + r0 * ldx + g * Ci, *wt = t->wt + g * Ci * Co + o;
                float *y = t->y + r0 * ldy + g * Co + o;
                const int two = Co - o >= 16;
                if (R == PW_ROWS) { /* 8 accumulators: 4 rows x 16 outputs or 8 rows x 8 */
                    if (two) {
                        pw_tile(x, wt, y, ldx, ldy, Ci, Co, PW_ROWS / 2, 2);
                        pw_tile(x + PW_ROWS / 2 * ldx, wt, y + PW_ROWS / 2 * ldy, ldx, ldy, Ci, Co, PW_ROWS / 2, 2);
                    } else
                        pw_tile(x, wt, y, ldx, ldy, Ci, Co, PW_ROWS, 1);
                } else
                    for (int64_t r = 0; r < R; ++r) {
                        if (two) pw_tile(x + r * ldx, wt, y + r * ldy, ldx, ldy, Ci, Co, 1, 2);
                        else pw_tile(x + r * ldx, wt, y + r * ldy, ldx, ldy, Ci, Co, 1, 1);
                    }
            }
    }
}

/* y = the product with wt [G][Ci][Co] (Co % 8 == 0) */
static void pw_apply(const float *x, const float *wt, float *y, int64_t M, int64_t G, int64_t Ci, int64_t Co,
                     int64_t threads) {
    pw_job_t t = {x, wt, NULL, y, NULL, M, G, Ci, Co};
    parallel(pw_rows, &t, (M + PW_ROWS - 1) / PW_ROWS, threads);
}

/* forward: w is PyTorch's [G*Co, Ci]. Returns 0, or -1 (Co % 8 != 0, or no memory) */
int pw_forward(const float *x, const float *w, float *y, int64_t M, int64_t G, int64_t Ci, int64_t Co,
               int64_t threads) {
    if (Co % 8 || M < 1) return -1;
    float *wt = malloc(sizeof(float) * (size_t)(G * Ci * Co));
    if (!wt) return -1;
    for (int64_t g = 0; g < G; ++g)
        for (int64_t o = 0; o < Co; ++o)
            for (int64_t i = 0; i < Ci; ++i) wt[(g * Ci + i) * Co + o] = w[(g * Co + o) * Ci + i];
    pw_apply(x, wt, y, M, G, Ci, Co, threads);
    free(wt);
    return 0;
}

/* input gradient gx [M, G*Ci] of pw_forward for gy [M, G*Co]. Returns 0, or -1 (Ci % 8 != 0) */
int pw_grad_input(const float *gy, const float *w, float *gx, int64_t M, int64_t G, int64_t Ci, int64_t Co,
                  int64_t threads) {
    if (Ci % 8 || M < 1) return -1;
    pw_apply(gy, w, gx, M, G, Co, Ci, threads);
    return 0;
}

/* weight gradient: gw[g, o, i] = sum over r of gy[r, g*Co + o] * x[r, g*Ci + i]. Tasks are
 * tiles of 8 accumulators: (group, 16 outputs, 4 inputs) where Co % 16 == 0, else (group, 8
 * outputs, 8 inputs). Each thread takes whole tiles (no reduction between threads) and walks the
 * rows in spans of PW_SPAN (their slices stay in cache while every tile of the thread reads
 * them), summing in registers over a span and into a float buffer after it. */
#define PW_SPAN 64
static inline __attribute__((always_inline)) void pw_wspan(const float *gr, const float *xr, float *ak, int64_t rows,
                                                           int64_t ldy, int64_t ldx, int64_t n, const int NV) {
    const int IN = 8 / NV;
    __m256 a[8];
    for (int j = 0; j < 8; ++j) a[j] = _mm256_load_ps(ak + 8 * j);
    for (int64_t r = 0; r < rows; ++r, gr += ldy, xr += ldx) {
        __m256 gv[2];
        for (int v = 0; v < NV; ++v) gv[v] = _mm256_loadu_ps(gr + 8 * v);
        for (int j = 0; j < IN; ++j) {
            if (j >= n) break;
            const __m256 b = _mm256_broadcast_ss(xr + j);
            for (int v = 0; v < NV; ++v) a[j * NV + v] = _mm256_fmadd_ps(b, gv[v], a[j * NV + v]);
        }
    }
    for (int j = 0; j < 8; ++j) _mm256_store_ps(ak + 8 * j, a[j]);
}

static void pw_wtiles(void *arg, int64_t k0, int64_t k1) {
    const pw_job_t *t = (const pw_job_t *)arg;
    const int64_t Ci = t->Ci, Co = t->Co, ldx = t->G * Ci, ldy = t->G * Co;
    const int NV = Co % 16 ? 1 : 2, IN = 8 / NV;
    const int64_t ni = (Ci + IN - 1) / IN, no = Co / (8 * NV);
    float *acc = t->acc + k0 * 64; /* [tile][8 accumulators (input, output vector)][8] */
    for (int64_t r0 = 0; r0 < t->M; r0 += PW_SPAN) {
        const int64_t rows = t->M - r0 < PW_SPAN ? t->M - r0 : PW_SPAN;
        for (int64_t k = k0; k < k1; ++k) {
            const int64_t g = k / (no * ni), o = (k / ni) % no * 8 * NV, i0 = k % ni * IN;
            const int64_t n = Ci - i0 < IN ? Ci - i0 : IN;
            const float *gr = t->gy + r0 * ldy + g * Co + o, *xr = t->x + r0 * ldx + g * Ci + i0;
            if (NV == 2) pw_wspan(gr, xr, acc + (k - k0) * 64, rows, ldy, ldx, n, 2);
            else pw_wspan(gr, xr, acc + (k - k0) * 64, rows, ldy, ldx, n, 1);
        }
    }
    for (int64_t k = k0; k < k1; ++k) {
        const int64_t g = k / (no * ni), o = (k / ni) % no * 8 * NV, i0 = k % ni * IN;
        const int64_t n = Ci - i0 < IN ? Ci - i0 : IN;
        for (int64_t j = 0; j < n; ++j)
            for (int v = 0; v < NV; ++v)
                for (int c = 0; c < 8; ++c)
                    t->y[(g * Co + o + 8 * v + c) * Ci + i0 + j] = acc[(k - k0) * 64 + (j * NV + v) * 8 + c];
    }
}

/* gw is [G*Co, Ci] (PyTorch's layout). Returns 0, or -1 (Co % 8 != 0, or no memory) */
int pw_grad_weight(const float *gy, const float *x, float *gw, int64_t M, int64_t G, int64_t Ci, int64_t Co,
                   int64_t threads) {
    if (Co % 8 || M < 1) return -1;
    const int64_t in = Co % 16 ? 8 : 4, tiles = G * (Co / (64 / in)) * ((Ci + in - 1) / in);
    float *acc = NULL;
    if (posix_memalign((void **)&acc, 32, sizeof(float) * (size_t)(tiles * 64))) return -1;
    memset(acc, 0, sizeof(float) * (size_t)(tiles * 64));
    pw_job_t t = {x, NULL, gy, gw, acc, M, G, Ci, Co};
    parallel(pw_wtiles, &t, tiles, threads);
    free(acc);
    return 0;
}
