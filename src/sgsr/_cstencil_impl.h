/* The plane kernels of _cstencil.c for one floating type, included once per type and target
 * with T (the element type), NAME(x) (a suffix for both), sqrt_t and fabs_t defined. */

/* 32 bytes of T (GCC/Clang vector extension: one AVX register, or two SSE ones) */
typedef T NAME(vec) __attribute__((vector_size(32)));
#define VL ((int)(32 / sizeof(T)))

static inline NAME(vec) NAME(load)(const T *p)
{
    NAME(vec) v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void NAME(store)(T *p, NAME(vec) v) { memcpy(p, &v, sizeof v); }

/* out[x] (+)= sum_t c[t] * src[t][x] for x < n: each tap's row is read once and the output
 * written once, four vectors at a time so that four sums are in flight (one sum is a chain of
 * dependent multiply-adds: its latency, not the arithmetic, would set the pace) */
static inline void NAME(taps)(T *restrict out, const T *const *src, const T *c, int ntaps, int n,
                              int add)
{
    int x = 0;
    for (; x + 4 * VL <= n; x += 4 * VL) {
        NAME(vec) a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
        if (add) {
            a0 = NAME(load)(out + x);
            a1 = NAME(load)(out + x + VL);
            a2 = NAME(load)(out + x + 2 * VL);
            a3 = NAME(load)(out + x + 3 * VL);
        }
        for (int t = 0; t < ntaps; t++) {
            const T *p = src[t] + x;
            const T ct = c[t];
            a0 += ct * NAME(load)(p);
            a1 += ct * NAME(load)(p + VL);
            a2 += ct * NAME(load)(p + 2 * VL);
            a3 += ct * NAME(load)(p + 3 * VL);
        }
        NAME(store)(out + x, a0);
        NAME(store)(out + x + VL, a1);
        NAME(store)(out + x + 2 * VL, a2);
        NAME(store)(out + x + 3 * VL, a3);
    }
    for (; x + VL <= n; x += VL) {
        NAME(vec) acc = add ? NAME(load)(out + x) : (NAME(vec)){0};
        for (int t = 0; t < ntaps; t++) acc += c[t] * NAME(load)(src[t] + x);
        NAME(store)(out + x, acc);
    }
    for (; x < n; x++) {
        T acc = add ? out[x] : (T)0;
        for (int t = 0; t < ntaps; t++) acc += c[t] * src[t][x];
        out[x] = acc;
    }
}

/* One component of the stencil as a correlation of `in` (row stride in_stride) into the
 * rows x cols region `out` (stride out_stride): taps at offset o (forward, flip = 0) or at
 * flip - o (flip = 2r: the transpose, read from a map with a zero border of 2r). Separable
 * terms go through tmp, (rows + 2r) x cols. add: accumulate onto out instead of writing it. */
static void NAME(apply_component)(T *out, int out_stride, int rows, int cols, const T *in,
                                  int in_stride, const Component *cp, int r, int flip, T *tmp,
                                  int add)
{
    const T *src[MAX_DIRECT];
    T c[MAX_DIRECT];
    if (!cp->ndirect && !cp->nsep && !add) {
        for (int y = 0; y < rows; y++) memset(out + (size_t)y * out_stride, 0, sizeof(T) * cols);
        return;
    }
    for (int t = 0; t < cp->ndirect; t++) c[t] = (T)cp->direct[t].c;
    if (cp->ndirect) {
        for (int y = 0; y < rows; y++) {
            for (int t = 0; t < cp->ndirect; t++) {
                const int di = flip ? flip - cp->direct[t].di : cp->direct[t].di;
                const int dj = flip ? flip - cp->direct[t].dj : cp->direct[t].dj;
                src[t] = in + (size_t)(y + di) * in_stride + dj;
            }
            NAME(taps)(out + (size_t)y * out_stride, src, c, cp->ndirect, cols, add);
        }
        add = 1;
    }
    for (int s = 0; s < cp->nsep; s++, add = 1) {
        const Taps1 *h = &cp->sep[s].h, *v = &cp->sep[s].v;
        T ch[MAX_TAPS1], cv[MAX_TAPS1];
        for (int t = 0; t < h->n; t++) ch[t] = (T)h->c[t];
        for (int t = 0; t < v->n; t++) cv[t] = (T)v->c[t];
        for (int y = 0; y < rows + 2 * r; y++) {
            for (int t = 0; t < h->n; t++)
                src[t] = in + (size_t)y * in_stride + (flip ? flip - h->off[t] : h->off[t]);
            NAME(taps)(tmp + (size_t)y * cols, src, ch, h->n, cols, 0);
        }
        for (int y = 0; y < rows; y++) {
            for (int t = 0; t < v->n; t++)
                src[t] = tmp + (size_t)(y + (flip ? flip - v->off[t] : v->off[t])) * cols;
            NAME(taps)(out + (size_t)y * out_stride, src, cv, v->n, cols, add);
        }
    }
}

/* out = a - b, elementwise */
static inline void NAME(difference)(T *restrict out, const T *restrict a, const T *restrict b,
                                    int n)
{
    for (int x = 0; x < n; x++) out[x] = a[x] - b[x];
}

/* P (H+2r) x (W+2r) := pad(a - b) (b NULL: pad(a)); columns first, then whole rows, which is
 * how F.pad reflects or replicates (corners included). */
static void NAME(pad)(T *P, const T *a, const T *b, int H, int W, int r, int reflect)
{
    const int Wp = W + 2 * r;
    for (int y = 0; y < H; y++) {
        T *row = P + (size_t)(y + r) * Wp;
        if (b)
            NAME(difference)(row + r, a + (size_t)y * W, b + (size_t)y * W, W);
        else
            memcpy(row + r, a + (size_t)y * W, sizeof(T) * W);
        for (int i = 1; i <= r; i++) {
            row[r - i] = row[reflect ? r + i : r];
            row[r + W - 1 + i] = row[reflect ? r + W - 1 - i : r + W - 1];
        }
    }
    for (int i = 1; i <= r; i++) {
        memcpy(P + (size_t)(r - i) * Wp, P + (size_t)(reflect ? r + i : r) * Wp, sizeof(T) * Wp);
        memcpy(P + (size_t)(r + H - 1 + i) * Wp, P + (size_t)(reflect ? r + H - 1 - i : r + H - 1) * Wp,
               sizeof(T) * Wp);
    }
}

static inline void NAME(add_row)(T *restrict dst, const T *restrict src, int n)
{
    for (int x = 0; x < n; x++) dst[x] += src[x];
}

static inline void NAME(scaled)(T *restrict out, const T *restrict src, T c, int n)
{
    for (int x = 0; x < n; x++) out[x] = c * src[x];
}

/* The adjoint of `pad` in place on G ((H+2r) x (W+2r)): each border pixel's gradient is added
 * onto the pixel it was copied from, rows first, then columns; out (H x W) := sign * the
 * interior. */
static void NAME(fold)(T *out, T *G, int H, int W, int r, int reflect, T sign)
{
    const int Wp = W + 2 * r;
    for (int i = 1; i <= r; i++) {
        NAME(add_row)(G + (size_t)(reflect ? r + i : r) * Wp, G + (size_t)(r - i) * Wp, Wp);
        NAME(add_row)(G + (size_t)(reflect ? r + H - 1 - i : r + H - 1) * Wp,
                      G + (size_t)(r + H - 1 + i) * Wp, Wp);
    }
    for (int y = 0; y < H; y++) {
        T *row = G + (size_t)(y + r) * Wp;
        for (int i = 1; i <= r; i++) {
            row[reflect ? r + i : r] += row[r - i];
            row[reflect ? r + W - 1 - i : r + W - 1] += row[r + W - 1 + i];
        }
        if (sign == (T)1)
            memcpy(out + (size_t)y * W, row + r, sizeof(T) * W);
        else
            NAME(scaled)(out + (size_t)y * W, row + r, sign, W);
    }
}

/* sum of distance(m) over one row; the simd reduction lets the compiler keep one running sum
 * per vector lane (a fixed order for a given build) */
static inline T NAME(row_distance)(const T *restrict m, int W, int distance, T eps)
{
    T acc = 0;
    const T eps2 = eps * eps;
    if (distance == DIST_L1) {
#pragma omp simd reduction(+ : acc)
        for (int x = 0; x < W; x++) acc += fabs_t(m[x]);
    } else if (distance == DIST_L2) {
#pragma omp simd reduction(+ : acc)
        for (int x = 0; x < W; x++) acc += m[x] * m[x];
    } else {
#pragma omp simd reduction(+ : acc)
        for (int x = 0; x < W; x++) acc += sqrt_t(m[x] * m[x] + eps2) - eps;
    }
    return acc;
}

/* m := distance'(m) over one row (sign(m) for l1, 0 at 0 and at NaN as torch.sign; 2m for l2;
 * m / sqrt(m^2 + eps^2) for charbonnier) */
static inline void NAME(row_derivative)(T *restrict m, int n, int distance, T eps)
{
    const T eps2 = eps * eps;
    if (distance == DIST_L1) {
        for (int i = 0; i < n; i++) m[i] = m[i] > 0 ? (T)1 : (m[i] < 0 ? (T)-1 : (T)0);
    } else if (distance == DIST_L2) {
        for (int i = 0; i < n; i++) m[i] = 2 * m[i];
    } else {
        for (int i = 0; i < n; i++) m[i] = m[i] / sqrt_t(m[i] * m[i] + eps2);
    }
}

/* One worker's buffers: P the padded plane ((H+2r) x (W+2r); G, the padded gradient, reuses
 * it), tmp the separable rows ((H+4r) x (W+2r)), and Z for the maps that feed the transposed
 * stencil, each with a zero border of 2r ((H+4r) x (W+4r)). SGL: one map M (H x W) without a
 * gradient, else K maps in Z. The first-order loss: P2 for the padded hr, M for |grad sr| and
 * m (2 maps), Z for the two components of an image's gradient. */
typedef struct {
    T *P, *P2, *tmp, *M, *Z;
    size_t nz; /* elements of Z */
} NAME(Scratch);

/* where each buffer starts in one worker's block, in T; offsets[5] is the block's size */
static void NAME(offsets)(const Job *job, size_t offsets[6])
{
    const size_t H = job->H, W = job->W, r = job->plan.radius, K = job->plan.ncomp;
    const size_t np = (H + 2 * r) * (W + 2 * r), nt = (H + 4 * r) * (W + 2 * r), nm = H * W;
    const size_t nz1 = (H + 4 * r) * (W + 4 * r);
    const int grad1 = job->kind == KIND_GRAD1;
    offsets[0] = 0;                                                  /* P */
    offsets[1] = np;                                                 /* P2 */
    offsets[2] = offsets[1] + (grad1 ? np : 0);                      /* tmp */
    offsets[3] = offsets[2] + nt;                                    /* M */
    offsets[4] = offsets[3] + (grad1 ? 2 * nm : job->grad_sr ? 0 : nm); /* Z */
    offsets[5] = offsets[4] + (grad1 ? 2 * nz1 : job->grad_sr ? K * nz1 : 0);
}

static size_t NAME(scratch_size)(const Job *job)
{
    size_t o[6];
    NAME(offsets)(job, o);
    return o[5];
}

static void NAME(scratch)(NAME(Scratch) *s, const Job *job, void *block)
{
    size_t o[6];
    NAME(offsets)(job, o);
    T *base = block;
    s->P = base + o[0];
    s->P2 = base + o[1];
    s->tmp = base + o[2];
    s->M = base + o[3];
    s->Z = base + o[4];
    s->nz = o[5] - o[4];
    if (s->nz) memset(s->Z, 0, sizeof(T) * s->nz); /* the zero borders */
}

/* The interior of zero-bordered map k: where the forward stencil writes a derivative map. */
static inline T *NAME(z_interior)(const NAME(Scratch) *s, const Job *job, int k)
{
    const size_t H = job->H, W = job->W, r = job->plan.radius;
    const size_t wz = W + 4 * r;
    return s->Z + (size_t)k * (H + 4 * r) * wz + 2 * r * wz + 2 * r;
}

/* G := the transposed stencil of the K zero-bordered maps, (H+2r) x (W+2r) */
static void NAME(adjoint)(T *G, const NAME(Scratch) *s, const Job *job, int K)
{
    const int H = job->H, W = job->W, r = job->plan.radius;
    const int Wp = W + 2 * r, Hz = H + 4 * r, Wz = W + 4 * r;
    for (int k = 0; k < K; k++)
        NAME(apply_component)(G, Wp, H + 2 * r, Wp, s->Z + (size_t)k * Hz * Wz, Wz,
                              &job->plan.comp[k], r, 2 * r, s->tmp, k > 0);
}

/* SGL on planes [p0, p1): sums[p] = the sum of the distance over plane p's K maps and, with
 * job->grad_sr set, the gradient of that sum by sr in the same pass (by hr it is the negative),
 * so a backward only has to scale it. */
static void NAME(sgl_planes)(const Job *job, int p0, int p1, double *sums, void *block)
{
    const int H = job->H, W = job->W, r = job->plan.radius, K = job->plan.ncomp;
    const int Wp = W + 2 * r, Wz = W + 4 * r;
    const size_t nm = (size_t)H * W;
    const T eps = (T)job->eps;
    NAME(Scratch) s;
    NAME(scratch)(&s, job, block);
    for (int p = p0; p < p1; p++) {
        const T *a = (const T *)job->sr + (size_t)p * nm, *b = (const T *)job->hr + (size_t)p * nm;
        NAME(pad)(s.P, a, b, H, W, r, job->reflect);
        double total = 0.0;
        for (int k = 0; k < K; k++) {
            /* the map goes where the transposed stencil reads it when there is a gradient */
            T *mk = job->grad_sr ? NAME(z_interior)(&s, job, k) : s.M;
            const int stride = job->grad_sr ? Wz : W;
            NAME(apply_component)(mk, stride, H, W, s.P, Wp, &job->plan.comp[k], r, 0, s.tmp, 0);
            for (int y = 0; y < H; y++) {
                T *row = mk + (size_t)y * stride;
                total += (double)NAME(row_distance)(row, W, job->distance, eps);
                if (job->grad_sr) NAME(row_derivative)(row, W, job->distance, eps);
            }
        }
        sums[p] = total;
        if (job->grad_sr) {
            NAME(adjoint)(s.P, &s, job, K);
            NAME(fold)((T *)job->grad_sr + (size_t)p * nm, s.P, H, W, r, job->reflect, (T)1);
        }
    }
}

static inline void NAME(norm)(T *restrict mag, const T *restrict gx, const T *restrict gy, int n,
                              T grad_eps)
{
    for (int i = 0; i < n; i++) mag[i] = sqrt_t(gx[i] * gx[i] + gy[i] * gy[i] + grad_eps);
}

/* m = a - m, elementwise in place */
static inline void NAME(subtract_from)(T *m, const T *restrict a, size_t n)
{
    for (size_t i = 0; i < n; i++) m[i] = a[i] - m[i];
}

/* (gx, gy) *= dm / |g|: the chain rule through the magnitude */
static inline void NAME(through_norm)(T *restrict gx, T *restrict gy, const T *restrict dm,
                                      const T *restrict mag, int n)
{
    for (int i = 0; i < n; i++) {
        const T coef = dm[i] / mag[i];
        gx[i] *= coef;
        gy[i] *= coef;
    }
}

/* |grad u| = sqrt(gx^2 + gy^2 + grad_eps) of the padded plane P into mag (H x W), with gx and
 * gy into the interiors of the zero-bordered maps 0 and 1 */
static void NAME(magnitude)(T *mag, const NAME(Scratch) *s, const T *P, const Job *job)
{
    const int H = job->H, W = job->W, r = job->plan.radius;
    const int Wp = W + 2 * r, Wz = W + 4 * r;
    T *gx = NAME(z_interior)(s, job, 0), *gy = NAME(z_interior)(s, job, 1);
    NAME(apply_component)(gx, Wz, H, W, P, Wp, &job->plan.comp[0], r, 0, s->tmp, 0);
    NAME(apply_component)(gy, Wz, H, W, P, Wp, &job->plan.comp[1], r, 0, s->tmp, 0);
    for (int y = 0; y < H; y++)
        NAME(norm)(mag + (size_t)y * W, gx + (size_t)y * Wz, gy + (size_t)y * Wz, W,
                   (T)job->grad_eps);
}

/* The first-order loss D(|grad sr|, |grad hr|) on planes [p0, p1), as sgl_planes, with the
 * gradients of the sum by sr and by hr where job->grad_sr / grad_hr are set. P and P2 hold the
 * padded sr and hr, M's maps |grad sr| and m = |grad sr| - |grad hr|; the image gradients live
 * in the zero-bordered maps, where the transposed stencil reads them. */
static void NAME(grad1_planes)(const Job *job, int p0, int p1, double *sums, void *block)
{
    const int H = job->H, W = job->W, r = job->plan.radius, Wz = W + 4 * r;
    const size_t nm = (size_t)H * W;
    const T eps = (T)job->eps;
    NAME(Scratch) s;
    NAME(scratch)(&s, job, block);
    T *mag = s.M, *m = s.M + nm;
    T *gx = NAME(z_interior)(&s, job, 0), *gy = NAME(z_interior)(&s, job, 1);
    for (int p = p0; p < p1; p++) {
        const T *a = (const T *)job->sr + (size_t)p * nm, *b = (const T *)job->hr + (size_t)p * nm;
        NAME(pad)(s.P2, b, NULL, H, W, r, job->reflect);
        NAME(magnitude)(m, &s, s.P2, job); /* m := |grad hr| */
        NAME(pad)(s.P, a, NULL, H, W, r, job->reflect);
        NAME(magnitude)(mag, &s, s.P, job);
        NAME(subtract_from)(m, mag, nm);
        double total = 0.0;
        for (int y = 0; y < H; y++) {
            total += (double)NAME(row_distance)(m + (size_t)y * W, W, job->distance, eps);
            if (job->grad_sr || job->grad_hr)
                NAME(row_derivative)(m + (size_t)y * W, W, job->distance, eps);
        }
        sums[p] = total;
        for (int side = 0; side < 2; side++) {
            T *out = side == 0 ? (T *)job->grad_sr : (T *)job->grad_hr;
            if (!out) continue;
            if (side == 1) NAME(magnitude)(mag, &s, s.P2, job); /* hr's gradient and magnitude */
            for (int y = 0; y < H; y++)
                NAME(through_norm)(gx + (size_t)y * Wz, gy + (size_t)y * Wz, m + (size_t)y * W,
                                   mag + (size_t)y * W, W);
            NAME(adjoint)(s.P, &s, job, 2);
            NAME(fold)(out + (size_t)p * nm, s.P, H, W, r, job->reflect, side == 0 ? (T)1 : (T)-1);
        }
    }
}

#undef VL
