/* sgsr._cstencil: SGL and the first-order gradient loss on the CPU, fused per image plane.
 *
 * One call runs pad(sr - hr), the operator's stencil, the distance and the sum over planes of
 * a contiguous (B, C, H, W) float32 or float64 batch and, when asked, the gradient of that sum
 * in the same pass (distance', the transposed stencil, the padding's adjoint): a backward then
 * only scales it. Each worker keeps one plane's buffers in its cache, so the image makes one
 * trip through memory instead of one per tap and per step. Per-plane sums are added in plane
 * order in double: the result does not depend on the number of threads.
 *
 * The Python side (sgsr.cstencil) passes raw data pointers of tensors it has checked, and the
 * operator as a flat float64 plan (sgsr.gradients.stencil_plan). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#ifndef SGSR_CSTENCIL_SOURCE
#define SGSR_CSTENCIL_SOURCE ""
#endif

/* GCC on x86-64: the kernels are compiled twice, for AVX2 + FMA and for the baseline, and
 * the CPU picks at run time (same results up to the FMA's rounding). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define HAVE_V3 1
#else
#define HAVE_V3 0
#endif

enum { DIST_L1 = 0, DIST_L2 = 1, DIST_CHARBONNIER = 2 };
enum { KIND_SGL = 0, KIND_GRAD1 = 1 };
#define MAX_COMP 4
#define MAX_DIRECT 64
#define MAX_SEP 4
#define MAX_TAPS1 16

typedef struct {
    int di, dj;
    double c;
} Tap2;

typedef struct {
    int n;
    int off[MAX_TAPS1];
    double c[MAX_TAPS1];
} Taps1;

typedef struct {
    Taps1 h, v; /* horizontal pass over the padded rows, then vertical */
} SepTerm;

typedef struct {
    int ndirect, nsep;
    Tap2 direct[MAX_DIRECT];
    SepTerm sep[MAX_SEP];
} Component;

typedef struct {
    int radius, ncomp;
    Component comp[MAX_COMP];
} Plan;

typedef struct {
    int kind, is64, reflect, distance;
    int planes, H, W;
    double eps, grad_eps;
    const void *sr, *hr;
    void *grad_sr, *grad_hr;
    Plan plan;
} Job;

#define T float
#define sqrt_t sqrtf
#define fabs_t fabsf
#define NAME(x) x##_f32
#include "_cstencil_impl.h"
#undef NAME
#if HAVE_V3
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define NAME(x) x##_f32_v3
#include "_cstencil_impl.h"
#undef NAME
#pragma GCC pop_options
#endif
#undef T
#undef sqrt_t
#undef fabs_t

#define T double
#define sqrt_t sqrt
#define fabs_t fabs
#define NAME(x) x##_f64
#include "_cstencil_impl.h"
#undef NAME
#if HAVE_V3
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define NAME(x) x##_f64_v3
#include "_cstencil_impl.h"
#undef NAME
#pragma GCC pop_options
#endif
#undef T
#undef sqrt_t
#undef fabs_t

static int use_v3 = 0; /* set at import: the CPU has AVX2 and FMA */

static void run_planes(const Job *job, int p0, int p1, double *sums, void *block)
{
#if HAVE_V3
    if (use_v3) {
        if (job->kind == KIND_SGL) {
            if (job->is64) sgl_planes_f64_v3(job, p0, p1, sums, block);
            else sgl_planes_f32_v3(job, p0, p1, sums, block);
        } else {
            if (job->is64) grad1_planes_f64_v3(job, p0, p1, sums, block);
            else grad1_planes_f32_v3(job, p0, p1, sums, block);
        }
        return;
    }
#endif
    if (job->kind == KIND_SGL) {
        if (job->is64) sgl_planes_f64(job, p0, p1, sums, block);
        else sgl_planes_f32(job, p0, p1, sums, block);
    } else {
        if (job->is64) grad1_planes_f64(job, p0, p1, sums, block);
        else grad1_planes_f32(job, p0, p1, sums, block);
    }
}

/* The planes in `nthreads` contiguous ranges, one per thread of an OpenMP team: the same
 * runtime, and so the same worker threads, as torch's own CPU ops (its libgomp is loaded
 * first), which then neither wait for nor compete with threads of ours. Each worker's
 * buffers are a slice of one block allocated here. Returns 0, or -1 when out of memory. */
static int run_parallel(const Job *job, int nthreads, double *sums)
{
    if (nthreads > job->planes) nthreads = job->planes;
    if (nthreads < 1) nthreads = 1;
    const size_t bytes = job->is64 ? scratch_size_f64(job) * sizeof(double)
                                   : scratch_size_f32(job) * sizeof(float);
    const size_t stride = (bytes + 63) / 64 * 64;
    char *block = malloc(stride * (size_t)nthreads);
    if (!block) return -1;
#pragma omp parallel for schedule(static, 1) num_threads(nthreads)
    for (int t = 0; t < nthreads; t++) {
        const int p0 = (int)((long long)job->planes * t / nthreads);
        const int p1 = (int)((long long)job->planes * (t + 1) / nthreads);
        run_planes(job, p0, p1, sums, block + stride * (size_t)t);
    }
    free(block);
    return 0;
}

/* The plan: radius, ncomp, then per component: ndirect, (di, dj, c) x ndirect, nsep, and per
 * separable term nh, (offset, c) x nh, nv, (offset, c) x nv. */
static int read_count(const double *v, Py_ssize_t n, Py_ssize_t *i, int limit, const char *what)
{
    if (*i >= n) {
        PyErr_Format(PyExc_ValueError, "stencil plan ends before its %s", what);
        return -1;
    }
    const double x = v[(*i)++];
    if (!(x >= 0 && x <= limit) || x != (double)(int)x) {
        PyErr_Format(PyExc_ValueError, "stencil plan: %s must be an integer in [0, %d]", what,
                     limit);
        return -1;
    }
    return (int)x;
}

static int read_taps1(const double *v, Py_ssize_t n, Py_ssize_t *i, Taps1 *taps, int span)
{
    if ((taps->n = read_count(v, n, i, MAX_TAPS1, "1-D tap count")) < 0) return -1;
    for (int t = 0; t < taps->n; t++) {
        if ((taps->off[t] = read_count(v, n, i, span, "tap offset")) < 0) return -1;
        if (*i >= n) return read_count(v, n, i, 0, "tap coefficient");
        taps->c[t] = v[(*i)++];
    }
    return 0;
}

static int parse_plan(const double *v, Py_ssize_t n, Plan *plan)
{
    Py_ssize_t i = 0;
    if ((plan->radius = read_count(v, n, &i, 16, "radius")) < 0) return -1;
    if ((plan->ncomp = read_count(v, n, &i, MAX_COMP, "component count")) < 1) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "stencil plan has no component");
        return -1;
    }
    const int span = 2 * plan->radius;
    for (int k = 0; k < plan->ncomp; k++) {
        Component *cp = &plan->comp[k];
        if ((cp->ndirect = read_count(v, n, &i, MAX_DIRECT, "direct tap count")) < 0) return -1;
        for (int t = 0; t < cp->ndirect; t++) {
            if ((cp->direct[t].di = read_count(v, n, &i, span, "tap row")) < 0) return -1;
            if ((cp->direct[t].dj = read_count(v, n, &i, span, "tap column")) < 0) return -1;
            if (i >= n) return read_count(v, n, &i, 0, "tap coefficient");
            cp->direct[t].c = v[i++];
        }
        if ((cp->nsep = read_count(v, n, &i, MAX_SEP, "separable term count")) < 0) return -1;
        for (int s = 0; s < cp->nsep; s++) {
            if (read_taps1(v, n, &i, &cp->sep[s].h, span) < 0) return -1;
            if (read_taps1(v, n, &i, &cp->sep[s].v, span) < 0) return -1;
        }
    }
    if (i != n) {
        PyErr_SetString(PyExc_ValueError, "stencil plan has trailing values");
        return -1;
    }
    return 0;
}

static PyObject *cstencil_run(PyObject *self, PyObject *args)
{
    (void)self;
    Job job;
    unsigned long long sr, hr, grad_sr, grad_hr;
    Py_buffer plan;
    int nthreads;
    memset(&job, 0, sizeof job);
    if (!PyArg_ParseTuple(args, "iiKKKKiiiy*iiddi", &job.kind, &job.is64, &sr, &hr, &grad_sr,
                          &grad_hr, &job.planes, &job.H, &job.W, &plan, &job.reflect,
                          &job.distance, &job.eps, &job.grad_eps, &nthreads))
        return NULL;
    int bad = plan.len % (Py_ssize_t)sizeof(double) != 0;
    if (!bad) bad = parse_plan(plan.buf, plan.len / (Py_ssize_t)sizeof(double), &job.plan);
    PyBuffer_Release(&plan);
    if (bad) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "stencil plan is not float64");
        return NULL;
    }
    const int r = job.plan.radius;
    if (job.kind != KIND_SGL && job.kind != KIND_GRAD1) {
        PyErr_Format(PyExc_ValueError, "unknown kind %d", job.kind);
        return NULL;
    }
    if (job.kind == KIND_GRAD1 && job.plan.ncomp != 2) {
        PyErr_SetString(PyExc_ValueError, "the first-order loss needs a two-component plan");
        return NULL;
    }
    if (job.distance < DIST_L1 || job.distance > DIST_CHARBONNIER) {
        PyErr_Format(PyExc_ValueError, "unknown distance code %d", job.distance);
        return NULL;
    }
    if (job.planes < 0 || !sr || !hr) {
        PyErr_SetString(PyExc_ValueError, "planes must be >= 0 and sr, hr non-null addresses");
        return NULL;
    }
    if (job.H <= r || job.W <= r) {
        PyErr_Format(PyExc_ValueError, "planes of %d x %d need H and W > %d", job.H, job.W, r);
        return NULL;
    }
    job.sr = (const void *)(uintptr_t)sr;
    job.hr = (const void *)(uintptr_t)hr;
    job.grad_sr = (void *)(uintptr_t)grad_sr;
    job.grad_hr = (void *)(uintptr_t)grad_hr;
    if (job.kind == KIND_SGL && job.grad_hr) {
        PyErr_SetString(PyExc_ValueError, "SGL's gradient by hr is the negative of sr's: pass grad_sr");
        return NULL;
    }
    double *sums = calloc(job.planes ? (size_t)job.planes : 1, sizeof(double));
    if (!sums) return PyErr_NoMemory();
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = job.planes ? run_parallel(&job, nthreads, sums) : 0;
    Py_END_ALLOW_THREADS
    double total = 0.0;
    for (int p = 0; p < job.planes; p++) total += sums[p];
    free(sums);
    if (status) return PyErr_NoMemory();
    return PyFloat_FromDouble(total);
}

static PyMethodDef methods[] = {
    {"run", cstencil_run, METH_VARARGS,
     "run(kind, is64, sr, hr, grad_sr, grad_hr, planes, H, W, plan, reflect, distance, eps, "
     "grad_eps, nthreads) -> the sum of the distance, having written its gradients by sr and "
     "by hr (the first-order loss only) where those addresses are not 0. Addresses are of "
     "contiguous (planes, H, W) buffers of one dtype, float64 if is64 else float32."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_cstencil",
    "Fused CPU kernels of SGL and the first-order gradient loss (see sgsr.cstencil).", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__cstencil(void)
{
#if HAVE_V3
    __builtin_cpu_init();
    use_v3 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    if (PyModule_AddStringConstant(m, "source_hash", SGSR_CSTENCIL_SOURCE) < 0 ||
        PyModule_AddIntConstant(m, "KIND_SGL", KIND_SGL) < 0 ||
        PyModule_AddIntConstant(m, "KIND_GRAD1", KIND_GRAD1) < 0 ||
        PyModule_AddIntConstant(m, "vectorized", use_v3) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
