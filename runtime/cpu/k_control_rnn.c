/* Recurrent kernels: RNN, GRU and LSTM (all directions, both layouts,
 * sequence_lens, initial states, peepholes, activations with alpha/beta,
 * clip, input_forget, linear_before_reset). Computed in double for every
 * float dtype, one batch row and direction at a time. */
#include "runtime/cpu/util.h"

#include <math.h>
#include <string.h>
#include <strings.h>

typedef enum { RNN_SIMPLE, RNN_GRU, RNN_LSTM } rnn_kind;

typedef enum {
    ACT_RELU,
    ACT_TANH,
    ACT_SIGMOID,
    ACT_AFFINE,
    ACT_LEAKY_RELU,
    ACT_THRESHOLDED_RELU,
    ACT_SCALED_TANH,
    ACT_HARD_SIGMOID,
    ACT_ELU,
    ACT_SOFTSIGN,
    ACT_SOFTPLUS
} act_kind;

typedef struct act {
    act_kind kind;
    double alpha, beta;
} act;

/* Name, whether alpha and beta are taken from the attribute lists, and
 * their defaults: those of the ONNX operator of the same name. */
static const struct {
    const char *name;
    act_kind kind;
    bool has_alpha, has_beta;
    double alpha, beta;
} act_table[] = {
    {"Relu", ACT_RELU, false, false, 0, 0},
    {"Tanh", ACT_TANH, false, false, 0, 0},
    {"Sigmoid", ACT_SIGMOID, false, false, 0, 0},
    {"Affine", ACT_AFFINE, true, true, 1.0, 0.0},
    {"LeakyRelu", ACT_LEAKY_RELU, true, false, 0.01, 0},
    {"ThresholdedRelu", ACT_THRESHOLDED_RELU, true, false, 1.0, 0},
    {"ScaledTanh", ACT_SCALED_TANH, true, true, 1.0, 1.0},
    {"HardSigmoid", ACT_HARD_SIGMOID, true, true, 0.2, 0.5},
    {"Elu", ACT_ELU, true, false, 1.0, 0},
    {"Softsign", ACT_SOFTSIGN, false, false, 0, 0},
    {"Softplus", ACT_SOFTPLUS, false, false, 0, 0},
};

static double act_apply(const act *a, double x)
{
    switch (a->kind) {
    case ACT_RELU: return x > 0 ? x : 0;
    case ACT_TANH: return tanh(x);
    case ACT_SIGMOID: return 1.0 / (1.0 + exp(-x));
    case ACT_AFFINE: return a->alpha * x + a->beta;
    case ACT_LEAKY_RELU: return x >= 0 ? x : a->alpha * x;
    case ACT_THRESHOLDED_RELU: return x > a->alpha ? x : 0;
    case ACT_SCALED_TANH: return a->alpha * tanh(a->beta * x);
    case ACT_HARD_SIGMOID: {
        double v = a->alpha * x + a->beta;
        return v < 0 ? 0 : v > 1 ? 1 : v;
    }
    case ACT_ELU: return x >= 0 ? x : a->alpha * (exp(x) - 1);
    case ACT_SOFTSIGN: return x / (1 + fabs(x));
    case ACT_SOFTPLUS: return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x));
    }
    return x;
}

typedef struct rnn {
    rnn_kind kind;
    uint32_t n_gates, n_acts;       /* gates per direction; activations per direction */
    int64_t seq, batch, in_size, hidden, dirs;
    int64_t layout;
    bool first_reversed;            /* direction "reverse": direction 0 runs backwards */
    bool has_clip, input_forget, linear_before_reset;
    double clip;
    act acts[2][3];
    double *x;                      /* [seq][batch][in_size] */
    double *w, *r;                  /* [dirs][G*H][in_size], [dirs][G*H][H] */
    double *b;                      /* [dirs][2*G*H] (zeros when absent) */
    double *p;                      /* LSTM: [dirs][3*H] */
    double *h0, *c0;                /* [dirs][batch][H] */
    int64_t *lens;                  /* [batch] */
    double *y;                      /* [seq][dirs][batch][H] */
    double *yh, *yc;                /* [dirs][batch][H] */
} rnn;

static kn_status read_all(kn_kctx *c, const kn_rt_tensor *t, double **out)
{
    double *v = kn_kctx_scratch(c, (size_t)(t->numel + 1) * sizeof *v);
    if (!v)
        return KN_ERR_NOMEM;
    for (int64_t i = 0; i < t->numel; i++)
        v[i] = kn_get_f64(t->dtype, t->data, i);
    *out = v;
    return KN_OK;
}

static kn_status check_shape(kn_kctx *c, const kn_rt_tensor *t, const char *name, kn_dtype dt, int32_t rank,
                             const int64_t *dims)
{
    bool ok = t->rank == rank;
    for (int32_t i = 0; ok && i < rank; i++)
        ok = t->dims[i] == dims[i];
    if (!ok) {
        char want[160] = "", got[160] = "";
        size_t pw = 0, pg = 0;
        for (int32_t i = 0; i < rank && pw < sizeof want - 24; i++)
            pw += (size_t)snprintf(want + pw, sizeof want - pw, "%s%lld", i ? ", " : "", (long long)dims[i]);
        for (int32_t i = 0; i < t->rank && pg < sizeof got - 24; i++)
            pg += (size_t)snprintf(got + pg, sizeof got - pg, "%s%lld", i ? ", " : "", (long long)t->dims[i]);
        return kn_kctx_fail(c, KN_ERR_INVALID, "%s must have shape [%s], got [%s]", name, want, got);
    }
    if (t->dtype != dt)
        return kn_kctx_fail(c, KN_ERR_INVALID, "%s must be %s like X, got %s", name, kn_dtype_name(dt),
                            kn_dtype_name(t->dtype));
    return KN_OK;
}

/* A [dirs][batch][H] state input, taking layout 1's [batch][dirs][H]. */
static kn_status read_state(kn_kctx *c, rnn *n, const kn_rt_tensor *t, const char *name, kn_dtype dt, double **out)
{
    int64_t dims[3] = {n->layout ? n->batch : n->dirs, n->layout ? n->dirs : n->batch, n->hidden};
    double *v = kn_kctx_scratch(c, (size_t)(n->dirs * n->batch * n->hidden + 1) * sizeof *v);
    if (!v)
        return KN_ERR_NOMEM;
    *out = v;
    if (!t)
        return KN_OK;
    KN_TRY(check_shape(c, t, name, dt, 3, dims));
    for (int64_t d = 0; d < n->dirs; d++)
        for (int64_t b = 0; b < n->batch; b++)
            for (int64_t k = 0; k < n->hidden; k++) {
                int64_t src = n->layout ? (b * n->dirs + d) * n->hidden + k : (d * n->batch + b) * n->hidden + k;
                v[(d * n->batch + b) * n->hidden + k] = kn_get_f64(t->dtype, t->data, src);
            }
    return KN_OK;
}

/* Activations: the defaults of the op, or the attribute's list (one set per
 * direction, or one set shared by both); alpha/beta values are consumed in
 * list order by the functions that take them. */
static kn_status parse_acts(kn_kctx *c, rnn *n)
{
    static const act_kind defaults[3][3] = {
        {ACT_TANH}, {ACT_SIGMOID, ACT_TANH}, {ACT_SIGMOID, ACT_TANH, ACT_TANH}};
    for (int64_t d = 0; d < 2; d++)
        for (uint32_t i = 0; i < n->n_acts; i++)
            n->acts[d][i] = (act){defaults[n->kind][i], 0, 0};
    const kn_attr *a = kn_kctx_attr(c, "activations");
    if (!a)
        return KN_OK;
    if (a->kind != KN_ATTR_STRINGS)
        return kn_kctx_fail(c, KN_ERR_INVALID, "'activations' must be a list of strings");
    uint32_t na = a->n;
    if (na != n->n_acts * n->dirs && !(n->dirs == 2 && na == n->n_acts))
        return kn_kctx_fail(c, KN_ERR_INVALID, "'activations' has %u entries, expected %u", na,
                            (unsigned)(n->n_acts * n->dirs));
    uint32_t n_alpha, n_beta, ia = 0, ib = 0;
    const float *alpha = kn_kctx_attr_floats(c, "activation_alpha", &n_alpha);
    const float *beta = kn_kctx_attr_floats(c, "activation_beta", &n_beta);
    for (uint32_t i = 0; i < na; i++) {
        const kn_bytes *s = &a->u.strings[i];
        size_t k = 0, nt = sizeof act_table / sizeof act_table[0];
        for (; k < nt; k++)
            if (strlen(act_table[k].name) == s->len &&
                strncasecmp(act_table[k].name, (const char *)s->data, s->len) == 0)
                break;
        if (k == nt)
            return kn_kctx_fail(c, KN_ERR_UNSUPPORTED, "unknown activation '%.*s'", (int)(s->len > 64 ? 64 : s->len),
                                (const char *)s->data);
        act v = {act_table[k].kind, act_table[k].alpha, act_table[k].beta};
        if (act_table[k].has_alpha && ia < n_alpha)
            v.alpha = alpha[ia++];
        if (act_table[k].has_beta && ib < n_beta)
            v.beta = beta[ib++];
        n->acts[i / n->n_acts][i % n->n_acts] = v;
        if (na == n->n_acts && n->dirs == 2)
            n->acts[1][i] = v;
    }
    return KN_OK;
}

/* Reads and checks the inputs and attributes common to the three ops. */
static kn_status rnn_setup(kn_kctx *c, rnn *n, rnn_kind kind)
{
    memset(n, 0, sizeof *n);
    n->kind = kind;
    n->n_gates = kind == RNN_SIMPLE ? 1 : kind == RNN_GRU ? 3 : 4;
    n->n_acts = kind == RNN_SIMPLE ? 1 : kind == RNN_GRU ? 2 : 3;
    const kn_rt_tensor *x = kn_kctx_in(c, 0), *w = kn_kctx_in(c, 1), *r = kn_kctx_in(c, 2);
    if (!x || !w || !r)
        return kn_kctx_fail(c, KN_ERR_INVALID, "inputs X, W and R are required");
    if (!kn_dt_is_float(x->dtype))
        return kn_kctx_fail(c, KN_ERR_INVALID, "X must be a float tensor, got %s", kn_dtype_name(x->dtype));
    kn_dtype dt = x->dtype;
    n->layout = kn_kctx_attr_int(c, "layout", 0);
    if (n->layout != 0 && n->layout != 1)
        return kn_kctx_fail(c, KN_ERR_INVALID, "layout must be 0 or 1, got %lld", (long long)n->layout);
    if (x->rank != 3)
        return kn_kctx_fail(c, KN_ERR_INVALID, "X must have rank 3, got %d", (int)x->rank);
    n->seq = x->dims[n->layout ? 1 : 0];
    n->batch = x->dims[n->layout ? 0 : 1];
    n->in_size = x->dims[2];
    const char *dir = kn_kctx_attr_str(c, "direction", "forward");
    if (strcmp(dir, "forward") == 0 || strcmp(dir, "reverse") == 0) {
        n->dirs = 1;
        n->first_reversed = dir[0] == 'r';
    } else if (strcmp(dir, "bidirectional") == 0) {
        n->dirs = 2;
    } else {
        return kn_kctx_fail(c, KN_ERR_INVALID, "unknown direction '%s'", dir);
    }
    if (r->rank != 3)
        return kn_kctx_fail(c, KN_ERR_INVALID, "R must have rank 3, got %d", (int)r->rank);
    n->hidden = r->dims[2];
    int64_t hs = kn_kctx_attr_int(c, "hidden_size", n->hidden);
    if (hs != n->hidden)
        return kn_kctx_fail(c, KN_ERR_INVALID, "hidden_size is %lld, but R has %lld columns", (long long)hs,
                            (long long)n->hidden);
    int64_t gh = n->n_gates * n->hidden, H = n->hidden;
    if (n->hidden < 0 || gh / n->n_gates != n->hidden)
        return kn_kctx_fail(c, KN_ERR_LIMIT, "hidden size too large");
    int64_t wd[3] = {n->dirs, gh, n->in_size}, rd[3] = {n->dirs, gh, H}, bd[2] = {n->dirs, 2 * gh};
    KN_TRY(check_shape(c, w, "W", dt, 3, wd));
    KN_TRY(check_shape(c, r, "R", dt, 3, rd));
    const kn_rt_tensor *b = kn_kctx_in(c, 3), *sl = kn_kctx_in(c, 4), *ih = kn_kctx_in(c, 5);
    if (b)
        KN_TRY(check_shape(c, b, "B", dt, 2, bd));
    int64_t nx = kn_numel(3, (int64_t[]){n->seq, n->batch, n->in_size});
    int64_t ny = kn_numel(4, (int64_t[]){n->seq, n->dirs, n->batch, H});
    if (nx < 0 || ny < 0 || (uint64_t)ny > SIZE_MAX / sizeof(double))
        return kn_kctx_fail(c, KN_ERR_LIMIT, "tensor sizes overflow");

    /* X in [seq][batch][in] order */
    n->x = kn_kctx_scratch(c, (size_t)(nx + 1) * sizeof *n->x);
    if (!n->x)
        return KN_ERR_NOMEM;
    for (int64_t t = 0; t < n->seq; t++)
        for (int64_t bb = 0; bb < n->batch; bb++)
            for (int64_t k = 0; k < n->in_size; k++) {
                int64_t src = n->layout ? (bb * n->seq + t) * n->in_size + k : (t * n->batch + bb) * n->in_size + k;
                n->x[(t * n->batch + bb) * n->in_size + k] = kn_get_f64(dt, x->data, src);
            }
    KN_TRY(read_all(c, w, &n->w));
    KN_TRY(read_all(c, r, &n->r));
    if (b) {
        KN_TRY(read_all(c, b, &n->b));
    } else if (!(n->b = kn_kctx_scratch(c, (size_t)(n->dirs * 2 * gh + 1) * sizeof *n->b))) {
        return KN_ERR_NOMEM;
    }
    n->lens = kn_kctx_scratch(c, (size_t)(n->batch + 1) * sizeof *n->lens);
    if (!n->lens)
        return KN_ERR_NOMEM;
    for (int64_t bb = 0; bb < n->batch; bb++)
        n->lens[bb] = n->seq;
    if (sl) {
        int64_t *lens, nl;
        KN_TRY(kn_read_ints(c, sl, &lens, &nl));
        if (nl != n->batch)
            return kn_kctx_fail(c, KN_ERR_INVALID, "sequence_lens has %lld entries, the batch size is %lld",
                                (long long)nl, (long long)n->batch);
        for (int64_t bb = 0; bb < n->batch; bb++) {
            if (lens[bb] < 0 || lens[bb] > n->seq)
                return kn_kctx_fail(c, KN_ERR_INVALID, "sequence_lens[%lld] = %lld out of range [0, %lld]",
                                    (long long)bb, (long long)lens[bb], (long long)n->seq);
            n->lens[bb] = lens[bb];
        }
    }
    KN_TRY(read_state(c, n, ih, "initial_h", dt, &n->h0));
    if (kind == RNN_LSTM) {
        KN_TRY(read_state(c, n, kn_kctx_in(c, 6), "initial_c", dt, &n->c0));
        const kn_rt_tensor *p = kn_kctx_in(c, 7);
        int64_t pd[2] = {n->dirs, 3 * H};
        if (p) {
            KN_TRY(check_shape(c, p, "P", dt, 2, pd));
            KN_TRY(read_all(c, p, &n->p));
        } else if (!(n->p = kn_kctx_scratch(c, (size_t)(n->dirs * 3 * H + 1) * sizeof *n->p))) {
            return KN_ERR_NOMEM;
        }
        n->input_forget = kn_kctx_attr_int(c, "input_forget", 0) != 0;
    }
    if (kind == RNN_GRU)
        n->linear_before_reset = kn_kctx_attr_int(c, "linear_before_reset", 0) != 0;
    const kn_attr *clip = kn_kctx_attr(c, "clip");
    if (clip && clip->kind == KN_ATTR_FLOAT) {
        n->has_clip = true;
        n->clip = clip->u.f;
        if (!(n->clip >= 0))
            return kn_kctx_fail(c, KN_ERR_INVALID, "clip must be non-negative, got %g", n->clip);
    }
    KN_TRY(parse_acts(c, n));
    size_t ns = (size_t)(n->dirs * n->batch * H + 1) * sizeof(double);
    n->y = kn_kctx_scratch(c, (size_t)(ny + 1) * sizeof *n->y);
    n->yh = kn_kctx_scratch(c, ns);
    n->yc = kn_kctx_scratch(c, ns);
    if (!n->y || !n->yh || !n->yc)
        return KN_ERR_NOMEM;
    return KN_OK;
}

/* out[i] = sum_k m[i][k] * v[k] for rows [0, rows) of a row-major matrix. */
static void matvec(double *out, const double *m, int64_t rows, int64_t cols, const double *v)
{
    for (int64_t i = 0; i < rows; i++) {
        const double *row = m + i * cols;
        double s = 0;
        for (int64_t k = 0; k < cols; k++)
            s += row[k] * v[k];
        out[i] = s;
    }
}

static double clipv(const rnn *n, double v)
{
    if (!n->has_clip)
        return v;
    return v > n->clip ? n->clip : v < -n->clip ? -n->clip : v;
}

/* Runs direction d over batch row bb; work holds 3*G*H + 2*H doubles. */
static void run_row(rnn *n, int64_t d, int64_t bb, double *work)
{
    int64_t H = n->hidden, G = n->n_gates, I = n->in_size;
    const double *w = n->w + d * G * H * I, *r = n->r + d * G * H * H;
    const double *wb = n->b + d * 2 * G * H, *rb = wb + G * H;
    double *xw = work, *hr = xw + G * H, *h = hr + G * H, *cst = h + H, *tmp = cst + H;
    const act *a = n->acts[d];
    bool backwards = d == 1 || n->first_reversed;
    int64_t len = n->lens[bb];
    memcpy(h, n->h0 + (d * n->batch + bb) * H, (size_t)H * sizeof *h);
    if (n->kind == RNN_LSTM)
        memcpy(cst, n->c0 + (d * n->batch + bb) * H, (size_t)H * sizeof *cst);
    for (int64_t s = 0; s < len; s++) {
        int64_t t = backwards ? len - 1 - s : s;
        const double *xt = n->x + (t * n->batch + bb) * I;
        matvec(xw, w, G * H, I, xt);
        if (n->kind == RNN_SIMPLE) {
            matvec(hr, r, H, H, h);
            for (int64_t j = 0; j < H; j++)
                h[j] = act_apply(&a[0], clipv(n, xw[j] + hr[j] + wb[j] + rb[j]));
        } else if (n->kind == RNN_GRU) {
            /* gates z, r, h; hr holds R_z h, R_r h and (per mode) R_h h */
            matvec(hr, r, 2 * H, H, h);
            double *z = tmp, *rg = tmp + H; /* tmp has room for 2H: see the caller */
            for (int64_t j = 0; j < H; j++) {
                z[j] = act_apply(&a[0], clipv(n, xw[j] + hr[j] + wb[j] + rb[j]));
                rg[j] = act_apply(&a[0], clipv(n, xw[H + j] + hr[H + j] + wb[H + j] + rb[H + j]));
            }
            double *rh = hr + 2 * H;
            if (n->linear_before_reset) {
                matvec(rh, r + 2 * H * H, H, H, h);
                for (int64_t j = 0; j < H; j++)
                    rh[j] = rg[j] * (rh[j] + rb[2 * H + j]);
            } else {
                double *gated = hr; /* R_z h, R_r h are no longer needed */
                for (int64_t j = 0; j < H; j++)
                    gated[j] = rg[j] * h[j];
                matvec(rh, r + 2 * H * H, H, H, gated);
                for (int64_t j = 0; j < H; j++)
                    rh[j] += rb[2 * H + j];
            }
            for (int64_t j = 0; j < H; j++) {
                double hh = act_apply(&a[1], clipv(n, xw[2 * H + j] + rh[j] + wb[2 * H + j]));
                h[j] = (1 - z[j]) * hh + z[j] * h[j];
            }
        } else {
            /* gates i, o, f, c; peepholes i, o, f */
            matvec(hr, r, G * H, H, h);
            const double *p = n->p + d * 3 * H;
            for (int64_t j = 0; j < H; j++) {
                double pre_i = xw[j] + hr[j] + wb[j] + rb[j];
                double pre_o = xw[H + j] + hr[H + j] + wb[H + j] + rb[H + j];
                double pre_f = xw[2 * H + j] + hr[2 * H + j] + wb[2 * H + j] + rb[2 * H + j];
                double pre_c = xw[3 * H + j] + hr[3 * H + j] + wb[3 * H + j] + rb[3 * H + j];
                double ig = act_apply(&a[0], clipv(n, pre_i + p[j] * cst[j]));
                double fg = n->input_forget ? 1 - ig : act_apply(&a[0], clipv(n, pre_f + p[2 * H + j] * cst[j]));
                double cg = act_apply(&a[1], clipv(n, pre_c));
                double cn = fg * cst[j] + ig * cg;
                double og = act_apply(&a[0], clipv(n, pre_o + p[H + j] * cn));
                cst[j] = cn;
                h[j] = og * act_apply(&a[2], cn);
            }
        }
        memcpy(n->y + ((t * n->dirs + d) * n->batch + bb) * H, h, (size_t)H * sizeof *h);
    }
    if (len == 0)
        return; /* an empty sequence has zero final states (as ONNX Runtime), not the initial ones */
    memcpy(n->yh + (d * n->batch + bb) * H, h, (size_t)H * sizeof *h);
    if (n->kind == RNN_LSTM)
        memcpy(n->yc + (d * n->batch + bb) * H, cst, (size_t)H * sizeof *cst);
}

/* Writes Y, Y_h and (LSTM) Y_c in the node's layout and X's dtype. */
static kn_status rnn_outputs(kn_kctx *c, rnn *n, kn_dtype dt)
{
    int64_t H = n->hidden;
    if (kn_kctx_out_wanted(c, 0)) {
        int64_t dims[4] = {n->seq, n->dirs, n->batch, H};
        if (n->layout)
            dims[0] = n->batch, dims[1] = n->seq, dims[2] = n->dirs;
        kn_rt_tensor *y;
        KN_TRY(kn_kctx_out(c, 0, dt, 4, dims, &y));
        for (int64_t t = 0; t < n->seq; t++)
            for (int64_t d = 0; d < n->dirs; d++)
                for (int64_t bb = 0; bb < n->batch; bb++) {
                    int64_t dst = n->layout ? ((bb * n->seq + t) * n->dirs + d) * H
                                            : ((t * n->dirs + d) * n->batch + bb) * H;
                    const double *src = n->y + ((t * n->dirs + d) * n->batch + bb) * H;
                    for (int64_t k = 0; k < H; k++)
                        kn_set_f64(dt, y->data, dst + k, src[k]);
                }
    }
    for (uint32_t o = 1; o <= (n->kind == RNN_LSTM ? 2u : 1u); o++) {
        if (!kn_kctx_out_wanted(c, o))
            continue;
        int64_t dims[3] = {n->dirs, n->batch, H};
        if (n->layout)
            dims[0] = n->batch, dims[1] = n->dirs;
        kn_rt_tensor *y;
        KN_TRY(kn_kctx_out(c, o, dt, 3, dims, &y));
        const double *st = o == 1 ? n->yh : n->yc;
        for (int64_t d = 0; d < n->dirs; d++)
            for (int64_t bb = 0; bb < n->batch; bb++) {
                int64_t dst = n->layout ? (bb * n->dirs + d) * H : (d * n->batch + bb) * H;
                for (int64_t k = 0; k < H; k++)
                    kn_set_f64(dt, y->data, dst + k, st[(d * n->batch + bb) * H + k]);
            }
    }
    return KN_OK;
}

static kn_status rnn_run(kn_kctx *c, rnn_kind kind)
{
    rnn n;
    KN_TRY(rnn_setup(c, &n, kind));
    double *work = kn_kctx_scratch(c, (size_t)(3 * n.n_gates * n.hidden + 4 * n.hidden + 1) * sizeof *work);
    if (!work)
        return KN_ERR_NOMEM;
    for (int64_t d = 0; d < n.dirs; d++)
        for (int64_t bb = 0; bb < n.batch; bb++)
            run_row(&n, d, bb, work);
    return rnn_outputs(c, &n, kn_kctx_in(c, 0)->dtype);
}

kn_status kn_ref_RNN(kn_kctx *c) { return rnn_run(c, RNN_SIMPLE); }
kn_status kn_ref_GRU(kn_kctx *c) { return rnn_run(c, RNN_GRU); }
kn_status kn_ref_LSTM(kn_kctx *c) { return rnn_run(c, RNN_LSTM); }
