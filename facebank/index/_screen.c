/* The rejection loop of facebank's random picks, in C: draws, float32 screening, exclusions.
 *
 * `screen` runs, for queries b = st[0] .. B-1 in turn, the loop that facebank.index.draws.draw_loop runs in
 * numpy, word for word: blocks of raw 64-bit words from the numpy bit generator (its `next_raw`,
 * what `random_raw` returns), shifted to `bits` bits, kept when below m (so they stay uniform),
 * mapped through the group's member rows, and screened by their float32 similarities (in each
 * space, the largest over the photo's faces). The first draw whose similarity is at most `lo`
 * (threshold minus the error bound) in every space and that is not excluded is the query's
 * pick. A draw within the error band (lo, hi] of some space is handed back to the caller, which
 * decides it exactly (facebank.index.cosine) and resumes; so is a query whose draws reach `limit` (the
 * caller scans). Nothing here decides a row near a threshold.
 *
 * Rows are float32 or float16 (converted exactly to float32). The float32 dot product sums in 16
 * interleaved partial sums (the compiler vectorises them); the picker's error bound holds for any
 * summation order, so only speed differs from numpy's.
 * The bit generator comes as numpy's "BitGenerator" capsule, used while the caller holds its
 * lock; arrays come through the buffer protocol, their types and sizes checked here.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* numpy's public bit generator interface (numpy/random/bitgen.h) */
typedef struct {
    void *state;
    uint64_t (*next_uint64)(void *st);
    uint32_t (*next_uint32)(void *st);
    double (*next_double)(void *st);
    uint64_t (*next_raw)(void *st);
} bitgen_t;

enum { ST_QUERY, ST_TRIES, ST_BLOCKS, ST_POS, ST_LEN, ST_X, ST_SIZE };
enum { DONE = 0, BAND = 1, LIMIT = 2 };

static float dot_f32(const float *a, const float *b, Py_ssize_t d)
{
    float acc[16] = {0};
    Py_ssize_t i = 0;
    for (; i + 16 <= d; i += 16)
        for (int k = 0; k < 16; k++)
            acc[k] += a[i + k] * b[i + k];
    float s = 0.0f;
    for (; i < d; i++)
        s += a[i] * b[i];
    for (int k = 0; k < 16; k++)
        s += acc[k];
    return s;
}

/* float16 -> float32, exact, without branches (the compiler vectorises it). Normal halves: the
 * exponent and mantissa bits shifted into a float's place, the exponent rebased (+112); zeros and
 * subnormal halves: the mantissa times 2^-24, a normal float. No float here is ever subnormal,
 * so a flush-to-zero mode set by another library cannot change a value. Infinities and NaNs never
 * reach here: the picker refuses rows that hold them. */
static inline float half_to_float(uint16_t h)
{
    float small = (float)(int32_t)(h & 0x3ffu) * 0x1p-24f, f;
    uint32_t small_bits, normal_bits = ((uint32_t)(h & 0x7fffu) << 13) + (112u << 23);
    memcpy(&small_bits, &small, sizeof small);
    uint32_t is_normal = 0u - (uint32_t)((h & 0x7c00u) != 0); /* all ones or zero: a select */
    uint32_t bits = (normal_bits & is_normal) | (small_bits & ~is_normal) | ((uint32_t)(h & 0x8000u) << 16);
    memcpy(&f, &bits, sizeof f);
    return f;
}

static float dot_f16(const uint16_t *a, const float *b, Py_ssize_t d)
{
    float acc[16] = {0};
    Py_ssize_t i = 0;
    for (; i + 16 <= d; i += 16)
        for (int k = 0; k < 16; k++)
            acc[k] += half_to_float(a[i + k]) * b[i + k];
    float s = 0.0f;
    for (; i < d; i++)
        s += half_to_float(a[i]) * b[i];
    for (int k = 0; k < 16; k++)
        s += acc[k];
    return s;
}

static int is_excluded(const int64_t *excl, Py_ssize_t n, int64_t row)
{
    Py_ssize_t lo = 0, hi = n;
    while (lo < hi) {
        Py_ssize_t mid = lo + (hi - lo) / 2;
        if (excl[mid] < row)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && excl[lo] == row;
}

/* A C-contiguous buffer of at least `count` items of one of the kinds in `kinds` ('f' float32,
 * 'e' float16, 'q' int64); returns the kind found, or 0 with an error set. */
static int get(PyObject *obj, Py_buffer *view, int writable, Py_ssize_t count, const char *kinds, const char *what)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0)) < 0)
        return 0;
    const char *f = view->format ? view->format : "B";
    if (*f == '<' || *f == '=' || *f == '@')
        f++;
    int kind = 0;
    if (f[0] != 0 && f[1] == 0) {
        if (f[0] == 'f' && view->itemsize == 4)
            kind = 'f';
        else if (f[0] == 'e' && view->itemsize == 2)
            kind = 'e';
        else if ((f[0] == 'l' || f[0] == 'q') && view->itemsize == 8)
            kind = 'q';
    }
    if (kind == 0 || strchr(kinds, kind) == NULL || count > PY_SSIZE_T_MAX / view->itemsize
        || view->len < count * view->itemsize) {
        PyErr_Format(PyExc_ValueError, "screen: %s must hold %zd %s", what, count,
                     kinds[0] == 'q' ? "int64" : (kinds[1] ? "float32 or float16" : "float32"));
        PyBuffer_Release(view);
        view->obj = NULL;
        return 0;
    }
    return kind;
}

enum { MAX_PARTS = 16 };

typedef struct {
    Py_buffer data, queries;
    const float *f32;
    const uint16_t *f16;
    const float *q;
    Py_ssize_t d;
    double lo, hi;
} part_t;

/* The largest similarity of a row to the F faces of one space. */
static double part_sim(const part_t *p, int64_t row, Py_ssize_t first, Py_ssize_t F)
{
    double best = 0.0;
    for (Py_ssize_t f = 0; f < F; f++) {
        const float *q = p->q + (first + f) * p->d;
        float v = p->f32 ? dot_f32(p->f32 + row * p->d, q, p->d) : dot_f16(p->f16 + row * p->d, q, p->d);
        if (f == 0 || (double)v > best)
            best = (double)v;
    }
    return best;
}

/* screen(capsule, n, parts, members i64 (m,) or None, m, B, F, bits, limit, words i64 (W,),
 *        excluded i64 sorted, work i64, resume) -> DONE, BAND or LIMIT.
 * parts: one tuple (data f32 or f16 (n, d), d, queries f32 (B * F, d), lo, hi) per space; query
 * b is the F faces b * F .. b * F + F - 1 of every space. A draw is screened out when its largest
 * similarity over the faces exceeds hi in any space; it is in the band when it exceeds lo in one.
 * work holds, in order: the state (ST_SIZE), each query's row (B), each query's tries (B), and
 * the current block's draws (at least the largest block, in words). The state is: query, draws
 * before the current block, blocks started, next position in the block, block length, and (as
 * the bits of a double) the band draw's similarity in the first space; a call with resume == 0
 * starts at query 0. On BAND, state[ST_POS] - 1 is the draw's position in the block; on LIMIT,
 * state[ST_TRIES] the draws made. */
static PyObject *screen(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 13) {
        PyErr_SetString(PyExc_TypeError, "screen takes 13 arguments");
        return NULL;
    }
    bitgen_t *bg = (bitgen_t *)PyCapsule_GetPointer(args[0], "BitGenerator");
    Py_ssize_t n = PyLong_AsSsize_t(args[1]);
    PyObject *parts_arg = args[2];
    Py_ssize_t m = PyLong_AsSsize_t(args[4]), B = PyLong_AsSsize_t(args[5]), F = PyLong_AsSsize_t(args[6]);
    long bits = PyLong_AsLong(args[7]);
    long long limit = PyLong_AsLongLong(args[8]);
    int resume = PyObject_IsTrue(args[12]);
    if (bg == NULL || PyErr_Occurred())
        return NULL;
    Py_ssize_t S = PyTuple_Check(parts_arg) ? PyTuple_GET_SIZE(parts_arg) : 0;
    if (S < 1 || S > MAX_PARTS) {
        PyErr_SetString(PyExc_ValueError, "screen: parts must be a tuple of 1 to 16 spaces");
        return NULL;
    }
    if (n < 1 || m < 1 || m > n || B < 0 || F < 1 || bits < 1 || bits > 63 || limit < 0
        || (m - 1) >> bits != 0 || B > PY_SSIZE_T_MAX / F) {
        PyErr_SetString(PyExc_ValueError, "screen: bad sizes or draw constants");
        return NULL;
    }
    part_t parts[MAX_PARTS];
    memset(parts, 0, sizeof parts);
    Py_buffer vm = {0}, vw = {0}, ve = {0}, vk = {0};
    PyObject *result = NULL;
    for (Py_ssize_t p = 0; p < S; p++) {
        PyObject *t = PyTuple_GET_ITEM(parts_arg, p);
        if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 5) {
            PyErr_SetString(PyExc_ValueError, "screen: a part is (data, d, queries, lo, hi)");
            goto out;
        }
        part_t *P = &parts[p];
        P->d = PyLong_AsSsize_t(PyTuple_GET_ITEM(t, 1));
        P->lo = PyFloat_AsDouble(PyTuple_GET_ITEM(t, 3));
        P->hi = PyFloat_AsDouble(PyTuple_GET_ITEM(t, 4));
        if (PyErr_Occurred())
            goto out;
        if (P->d < 1 || n > PY_SSIZE_T_MAX / 8 / P->d || B * F > PY_SSIZE_T_MAX / 8 / P->d) {
            PyErr_SetString(PyExc_ValueError, "screen: bad dimension");
            goto out;
        }
        int kind = get(PyTuple_GET_ITEM(t, 0), &P->data, 0, n * P->d, "fe", "data");
        if (!kind || !get(PyTuple_GET_ITEM(t, 2), &P->queries, 0, B * F * P->d, "f", "queries"))
            goto out;
        P->f32 = kind == 'f' ? P->data.buf : NULL;
        P->f16 = kind == 'e' ? P->data.buf : NULL;
        P->q = P->queries.buf;
    }
    int has_members = args[3] != Py_None;
    if ((has_members && !get(args[3], &vm, 0, m, "q", "members"))
        || !get(args[9], &vw, 0, 1, "q", "words")
        || !get(args[10], &ve, 0, 0, "q", "excluded")
        || !get(args[11], &vk, 1, ST_SIZE + 2 * B, "q", "work"))
        goto out;

    const int64_t *members = has_members ? vm.buf : NULL, *words = vw.buf, *excl = ve.buf;
    int64_t *st = vk.buf, *rows = st + ST_SIZE, *tries_out = rows + B, *buf = tries_out + B;
    Py_ssize_t nwords = vw.len / 8, nexcl = ve.len / 8, cap = vk.len / 8 - ST_SIZE - 2 * B;
    if (!resume)
        memset(st, 0, ST_SIZE * sizeof *st);
    const int shift = 64 - (int)bits;
    for (Py_ssize_t j = 0; j < nwords; j++) {
        if (words[j] < 1 || words[j] > cap) {
            PyErr_SetString(PyExc_ValueError, "screen: a block is larger than work holds");
            goto out;
        }
    }
    int64_t b = st[ST_QUERY], tries = st[ST_TRIES], nb = st[ST_BLOCKS], pos = st[ST_POS], len = st[ST_LEN];
    if (b < 0 || pos < 0 || len < 0 || pos > len || len > cap || tries < 0 || nb < 0) {
        PyErr_SetString(PyExc_ValueError, "screen: bad state");
        goto out;
    }
    int code = DONE;
    while (b < B) {
        int64_t found = -1;
        for (;;) {
            while (pos < len) {
                int64_t i = pos++;
                if (buf[i] < 0 || buf[i] >= m) { /* only a corrupted resume state gets here */
                    PyErr_SetString(PyExc_ValueError, "screen: bad state");
                    goto out;
                }
                int64_t row = members ? members[buf[i]] : buf[i];
                if (row < 0 || row >= n) {
                    PyErr_SetString(PyExc_ValueError, "screen: a member row is out of range");
                    goto out;
                }
                int out_of_range = 0, band = 0;
                double first = 0.0;
                for (Py_ssize_t p = 0; p < S && !out_of_range; p++) {
                    double s = part_sim(&parts[p], row, b * F, F);
                    if (p == 0)
                        first = s;
                    out_of_range = s > parts[p].hi;
                    band |= s > parts[p].lo;
                }
                if (out_of_range || (nexcl && is_excluded(excl, nexcl, row)))
                    continue;
                if (band) { /* within the error band in some space: the caller decides exactly */
                    memcpy(&st[ST_X], &first, sizeof first);
                    code = BAND;
                    goto save;
                }
                found = row;
                tries += i + 1;
                break;
            }
            if (found >= 0)
                break;
            tries += len; /* a block that failed: its draws count as tries */
            len = pos = 0;
            if (tries >= limit) {
                code = LIMIT;
                goto save;
            }
            int64_t want = words[nb < nwords ? nb : nwords - 1];
            nb++;
            if (want > limit - tries)
                want = limit - tries;
            for (int64_t j = 0; j < want; j++) {
                uint64_t w = bg->next_raw(bg->state) >> shift;
                if (w < (uint64_t)m) /* always, when m == 2^bits */
                    buf[len++] = (int64_t)w;
            }
        }
        rows[b] = found;
        tries_out[b] = tries;
        b++;
        tries = nb = pos = len = 0;
    }
save:
    st[ST_QUERY] = b; st[ST_TRIES] = tries; st[ST_BLOCKS] = nb; st[ST_POS] = pos; st[ST_LEN] = len;
    result = PyLong_FromLong(code);
out:
    for (Py_ssize_t p = 0; p < S; p++) {
        if (parts[p].data.obj) PyBuffer_Release(&parts[p].data);
        if (parts[p].queries.obj) PyBuffer_Release(&parts[p].queries);
    }
    if (vm.obj) PyBuffer_Release(&vm);
    if (vw.obj) PyBuffer_Release(&vw);
    if (ve.obj) PyBuffer_Release(&ve);
    if (vk.obj) PyBuffer_Release(&vk);
    return result;
}

static PyMethodDef methods[] = {
    {"screen", (PyCFunction)(void (*)(void))screen, METH_FASTCALL, "See the module comment."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_screen", NULL, -1, methods};

PyMODINIT_FUNC PyInit__screen(void) { return PyModule_Create(&module); }
