/* Sequential networks of the model spec (flcore/modelspec.py): Linear, Conv2d, ReLU, MaxPool2d, Flatten and the
 * softmax cross-entropy loss (mean over the batch), forward and backward, SGD with momentum, and a training loop
 * over mini-batches. Layouts are torch's: activations (B, C, H, W) row-major, Linear weight (out, in), Conv2d
 * weight (out, in, k, k), parameters concatenated in spec order (layer i weight, then bias). */
#include "kernel.h"

enum { L_LINEAR = 1, L_CONV = 2, L_RELU = 3, L_MAXPOOL = 4, L_FLATTEN = 5 };
#define MAX_LAYERS 64

typedef struct {
    int type, C, H, W, OC, OH, OW, k, stride, pad;
    int in_size, out_size; /* per example */
    int w_off, b_off;      /* offsets (floats) into params / grads */
    int32_t *argmax;       /* MaxPool2d: input index of each output, max_batch × out_size */
} Layer;

typedef struct {
    int nlayers, max_batch, nparams, in_size, nclasses;
    f32 *params, *grads, *mom;
    f32 *acts[MAX_LAYERS + 1]; /* acts[0]: the input batch (may point at caller memory) */
    f32 *gbuf[2];              /* gradient ping-pong buffers, max_batch × largest activation */
    f32 *xbuf;                 /* gathered input batch */
    int32_t *ybuf;             /* gathered labels */
    f32 *scratch;              /* transposed weights, im2col columns and their gradients */
    Layer layers[MAX_LAYERS];
} Model;

static inline int imax(int a, int b) { return a > b ? a : b; }

/* desc: 6 int32 per layer: type, then Linear(in, out) | Conv2d(in_c, out_c, k, stride, pad) | MaxPool2d(k, stride).
 * Input shape (c, h, w); a flat input is (features, 1, 1). Returns 0 if memory runs out. */
EXPORT(fl_model_create)
Model *fl_model_create(const int32_t *desc, int nlayers, int c, int h, int w, int max_batch) {
    if (nlayers < 1 || nlayers > MAX_LAYERS || max_batch < 1) return 0;
    Model *m = fl_alloc(sizeof(Model));
    if (!m) return 0;
    __builtin_memset(m, 0, sizeof(Model));
    m->nlayers = nlayers;
    m->max_batch = max_batch;
    m->in_size = c * h * w;
    int np = 0, maxact = m->in_size, scratch = 0;
    for (int i = 0; i < nlayers; i++) {
        const int32_t *d = desc + 6 * i;
        Layer *L = &m->layers[i];
        L->type = d[0];
        L->C = c; L->H = h; L->W = w;
        L->in_size = c * h * w;
        switch (d[0]) {
        case L_LINEAR:
            L->OC = d[2]; L->OH = 1; L->OW = 1;
            L->w_off = np; np += d[2] * d[1];
            L->b_off = np; np += d[2];
            scratch = imax(scratch, d[1] * d[2] + d[2] * max_batch);
            break;
        case L_CONV: {
            int k = d[3], s = d[4], p = d[5];
            L->k = k; L->stride = s; L->pad = p;
            L->OC = d[2];
            L->OH = (h + 2 * p - k) / s + 1;
            L->OW = (w + 2 * p - k) / s + 1;
            L->w_off = np; np += d[2] * c * k * k;
            L->b_off = np; np += d[2];
            int ckk = c * k * k, P = L->OH * L->OW;
            scratch = imax(scratch, 3 * ckk * P + ckk * d[2]);
            break;
        }
        case L_RELU:
            L->OC = c; L->OH = h; L->OW = w;
            break;
        case L_MAXPOOL:
            L->k = d[1]; L->stride = d[2] ? d[2] : d[1];
            L->OC = c;
            L->OH = (h - L->k) / L->stride + 1;
            L->OW = (w - L->k) / L->stride + 1;
            break;
        case L_FLATTEN:
            L->OC = c * h * w; L->OH = 1; L->OW = 1;
            break;
        default:
            return 0;
        }
        c = L->OC; h = L->OH; w = L->OW;
        L->out_size = c * h * w;
        maxact = imax(maxact, L->out_size);
        if (L->type == L_MAXPOOL) {
            L->argmax = fl_alloc((uint32_t)(max_batch * L->out_size) * 4u);
            if (!L->argmax) return 0;
        }
    }
    m->nclasses = c * h * w;
    m->nparams = np;
    m->params = fl_alloc((uint32_t)np * 4u);
    m->grads = fl_alloc((uint32_t)np * 4u);
    m->mom = fl_alloc((uint32_t)np * 4u);
    m->gbuf[0] = fl_alloc((uint32_t)(max_batch * maxact) * 4u);
    m->gbuf[1] = fl_alloc((uint32_t)(max_batch * maxact) * 4u);
    m->xbuf = fl_alloc((uint32_t)(max_batch * m->in_size) * 4u);
    m->ybuf = fl_alloc((uint32_t)max_batch * 4u);
    m->scratch = fl_alloc((uint32_t)(scratch + 16) * 4u);
    if (!m->params || !m->grads || !m->mom || !m->gbuf[0] || !m->gbuf[1] || !m->xbuf || !m->ybuf || !m->scratch)
        return 0;
    __builtin_memset(m->params, 0, (size_t)np * 4);
    __builtin_memset(m->mom, 0, (size_t)np * 4);
    for (int i = 0; i < nlayers; i++) {
        Layer *L = &m->layers[i];
        if (L->type == L_FLATTEN) continue;
        m->acts[i + 1] = fl_alloc((uint32_t)(max_batch * L->out_size) * 4u);
        if (!m->acts[i + 1]) return 0;
    }
    return m;
}

EXPORT(fl_model_params) f32 *fl_model_params(Model *m) { return m->params; }
EXPORT(fl_model_grads) f32 *fl_model_grads(Model *m) { return m->grads; }
EXPORT(fl_model_momentum) f32 *fl_model_momentum(Model *m) { return m->mom; }
EXPORT(fl_model_nparams) int fl_model_nparams(Model *m) { return m->nparams; }
EXPORT(fl_model_nclasses) int fl_model_nclasses(Model *m) { return m->nclasses; }
EXPORT(fl_model_max_batch) int fl_model_max_batch(Model *m) { return m->max_batch; }
EXPORT(fl_model_input) f32 *fl_model_input(Model *m) { return m->xbuf; }
EXPORT(fl_model_labels) int32_t *fl_model_labels(Model *m) { return m->ybuf; }

/* ── im2col / col2im for one example: cols[(c·k + ky)·k + kx, oy·OW + ox] ──────────────────────────────────── */
static void im2col(const Layer *L, const f32 *x, f32 *cols) {
    int k = L->k, s = L->stride, p = L->pad, P = L->OH * L->OW;
    for (int c = 0; c < L->C; c++)
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++) {
                f32 *row = cols + (size_t)((c * k + ky) * k + kx) * P;
                for (int oy = 0; oy < L->OH; oy++) {
                    int iy = oy * s + ky - p;
                    f32 *r = row + oy * L->OW;
                    if (iy < 0 || iy >= L->H) {
                        for (int ox = 0; ox < L->OW; ox++) r[ox] = 0.0f;
                        continue;
                    }
                    const f32 *xr = x + ((size_t)c * L->H + iy) * L->W;
                    for (int ox = 0; ox < L->OW; ox++) {
                        int ix = ox * s + kx - p;
                        r[ox] = (ix >= 0 && ix < L->W) ? xr[ix] : 0.0f;
                    }
                }
            }
}

static void col2im_add(const Layer *L, const f32 *cols, f32 *dx) {
    int k = L->k, s = L->stride, p = L->pad, P = L->OH * L->OW;
    for (int c = 0; c < L->C; c++)
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++) {
                const f32 *row = cols + (size_t)((c * k + ky) * k + kx) * P;
                for (int oy = 0; oy < L->OH; oy++) {
                    int iy = oy * s + ky - p;
                    if (iy < 0 || iy >= L->H) continue;
                    f32 *xr = dx + ((size_t)c * L->H + iy) * L->W;
                    const f32 *r = row + oy * L->OW;
                    for (int ox = 0; ox < L->OW; ox++) {
                        int ix = ox * s + kx - p;
                        if (ix >= 0 && ix < L->W) xr[ix] += r[ox];
                    }
                }
            }
}

static void add_bias_rows(f32 *y, const f32 *b, int rows, int n) {
    /* y[r, j] += b[j] */
    for (int r = 0; r < rows; r++) {
        f32 *yr = y + (size_t)r * n;
        int j = 0;
        for (; j + 4 <= n; j += 4) wasm_v128_store(yr + j, wasm_f32x4_add(wasm_v128_load(yr + j), wasm_v128_load(b + j)));
        for (; j < n; j++) yr[j] += b[j];
    }
}

/* ── forward ────────────────────────────────────────────────────────────────────────────────────────────── */
static void forward(Model *m, int B) {
    for (int i = 0; i < m->nlayers; i++) {
        Layer *L = &m->layers[i];
        const f32 *x = m->acts[i];
        f32 *y = m->acts[i + 1];
        const f32 *W = m->params + L->w_off, *bias = m->params + L->b_off;
        switch (L->type) {
        case L_LINEAR: {
            int I = L->in_size, O = L->OC;
            f32 *wt = m->scratch; /* Wᵀ (I, O) */
            fl_transpose(O, I, W, wt);
            fl_gemm_nn(B, O, I, x, I, wt, O, y, O, 0);
            add_bias_rows(y, bias, B, O);
            break;
        }
        case L_CONV: {
            int ckk = L->C * L->k * L->k, P = L->OH * L->OW;
            f32 *cols = m->scratch;
            for (int s = 0; s < B; s++) {
                im2col(L, x + (size_t)s * L->in_size, cols);
                f32 *ys = y + (size_t)s * L->out_size;
                fl_gemm_nn(L->OC, P, ckk, W, ckk, cols, P, ys, P, 0);
                for (int oc = 0; oc < L->OC; oc++) {
                    f32 bv = bias[oc], *r = ys + (size_t)oc * P;
                    for (int j = 0; j < P; j++) r[j] += bv;
                }
            }
            break;
        }
        case L_RELU: {
            int n = B * L->in_size, j = 0;
            v128_t z = wasm_f32x4_splat(0.0f);
            for (; j + 4 <= n; j += 4) wasm_v128_store(y + j, wasm_f32x4_max(wasm_v128_load(x + j), z));
            for (; j < n; j++) y[j] = x[j] > 0.0f ? x[j] : 0.0f;
            break;
        }
        case L_MAXPOOL: {
            int k = L->k, st = L->stride;
            for (int s = 0; s < B; s++) {
                const f32 *xs = x + (size_t)s * L->in_size;
                f32 *ys = y + (size_t)s * L->out_size;
                int32_t *am = L->argmax + (size_t)s * L->out_size;
                for (int c = 0; c < L->C; c++)
                    for (int oy = 0; oy < L->OH; oy++)
                        for (int ox = 0; ox < L->OW; ox++) {
                            int best = (c * L->H + oy * st) * L->W + ox * st;
                            f32 bv = xs[best];
                            for (int ky = 0; ky < k; ky++)
                                for (int kx = 0; kx < k; kx++) {
                                    int idx = (c * L->H + oy * st + ky) * L->W + ox * st + kx;
                                    f32 v = xs[idx];
                                    if (v > bv || v != v) { bv = v; best = idx; }
                                }
                            int o = (c * L->OH + oy) * L->OW + ox;
                            ys[o] = bv;
                            am[o] = best;
                        }
            }
            break;
        }
        case L_FLATTEN:
            m->acts[i + 1] = (f32 *)x;
            break;
        }
    }
}

/* mean softmax cross-entropy of logits (B, n) against labels; writes dL/dlogits into g */
static f64 softmax_xent(const f32 *logits, const int32_t *labels, int B, int n, f32 *g) {
    f64 total = 0.0;
    f64 invb = 1.0 / (f64)B;
    for (int s = 0; s < B; s++) {
        const f32 *l = logits + (size_t)s * n;
        f32 *gs = g + (size_t)s * n;
        f32 mx = l[0];
        for (int j = 1; j < n; j++) if (l[j] > mx) mx = l[j];
        f64 sum = 0.0;
        for (int j = 0; j < n; j++) { f64 e = fl_exp((f64)l[j] - (f64)mx); gs[j] = (f32)e; sum += e; }
        int y = labels[s];
        total += fl_log(sum) + (f64)mx - (f64)l[y];
        f64 scale = invb / sum;
        for (int j = 0; j < n; j++) gs[j] = (f32)((f64)gs[j] * scale);
        gs[y] -= (f32)invb;
    }
    return total * invb;
}

/* ── backward: gradients of every parameter (accumulated into m->grads, zeroed first) ────────────────────── */
static void backward(Model *m, int B, f32 *g) {
    __builtin_memset(m->grads, 0, (size_t)m->nparams * 4);
    int cur = (g == m->gbuf[0]) ? 0 : 1;
    for (int i = m->nlayers - 1; i >= 0; i--) {
        Layer *L = &m->layers[i];
        const f32 *x = m->acts[i], *y = m->acts[i + 1];
        f32 *dy = m->gbuf[cur], *dx = m->gbuf[1 - cur];
        const f32 *W = m->params + L->w_off;
        f32 *dW = m->grads + L->w_off, *db = m->grads + L->b_off;
        int need_dx = i > 0;
        switch (L->type) {
        case L_LINEAR: {
            int I = L->in_size, O = L->OC;
            for (int s = 0; s < B; s++) {
                const f32 *r = dy + (size_t)s * O;
                int j = 0;
                for (; j + 4 <= O; j += 4) wasm_v128_store(db + j, wasm_f32x4_add(wasm_v128_load(db + j), wasm_v128_load(r + j)));
                for (; j < O; j++) db[j] += r[j];
            }
            f32 *dyt = m->scratch; /* dyᵀ (O, B) */
            fl_transpose(B, O, dy, dyt);
            fl_gemm_nn(O, I, B, dyt, B, x, I, dW, I, 1);
            if (need_dx) { fl_gemm_nn(B, I, O, dy, O, W, I, dx, I, 0); cur = 1 - cur; }
            break;
        }
        case L_CONV: {
            int ckk = L->C * L->k * L->k, P = L->OH * L->OW, OC = L->OC;
            f32 *cols = m->scratch, *colsT = cols + (size_t)ckk * P, *dcols = colsT + (size_t)ckk * P;
            f32 *wt = dcols + (size_t)ckk * P;
            if (need_dx) {
                fl_transpose(OC, ckk, W, wt);
                __builtin_memset(dx, 0, (size_t)B * L->in_size * 4);
            }
            for (int s = 0; s < B; s++) {
                const f32 *dys = dy + (size_t)s * L->out_size;
                for (int oc = 0; oc < OC; oc++) {
                    const f32 *r = dys + (size_t)oc * P;
                    f32 acc = 0.0f;
                    for (int j = 0; j < P; j++) acc += r[j];
                    db[oc] += acc;
                }
                im2col(L, x + (size_t)s * L->in_size, cols);
                fl_transpose(ckk, P, cols, colsT);
                fl_gemm_nn(OC, ckk, P, dys, P, colsT, ckk, dW, ckk, 1);
                if (need_dx) {
                    fl_gemm_nn(ckk, P, OC, wt, OC, dys, P, dcols, P, 0);
                    col2im_add(L, dcols, dx + (size_t)s * L->in_size);
                }
            }
            if (need_dx) cur = 1 - cur;
            break;
        }
        case L_RELU: {
            int n = B * L->in_size, j = 0;
            v128_t z = wasm_f32x4_splat(0.0f);
            for (; j + 4 <= n; j += 4) {
                v128_t keep = wasm_f32x4_gt(wasm_v128_load(y + j), z);
                wasm_v128_store(dy + j, wasm_v128_and(wasm_v128_load(dy + j), keep));
            }
            for (; j < n; j++) if (!(y[j] > 0.0f)) dy[j] = 0.0f;
            break; /* in place: dx is dy */
        }
        case L_MAXPOOL:
            if (need_dx) {
                __builtin_memset(dx, 0, (size_t)B * L->in_size * 4);
                for (int s = 0; s < B; s++) {
                    const f32 *dys = dy + (size_t)s * L->out_size;
                    const int32_t *am = L->argmax + (size_t)s * L->out_size;
                    f32 *dxs = dx + (size_t)s * L->in_size;
                    for (int o = 0; o < L->out_size; o++) dxs[am[o]] += dys[o];
                }
                cur = 1 - cur;
            }
            break;
        case L_FLATTEN:
            break;
        }
    }
}

/* Forward only: logits of B examples at x (B × in_size floats); returns a pointer to them (valid until the
 * next call). */
EXPORT(fl_forward) f32 *fl_forward(Model *m, f32 *x, int B) {
    if (B < 1 || B > m->max_batch) return 0;
    m->acts[0] = x;
    forward(m, B);
    return m->acts[m->nlayers];
}

/* Loss and gradients (into fl_model_grads) of one batch; returns the mean loss. */
EXPORT(fl_loss_grad) f64 fl_loss_grad(Model *m, f32 *x, const int32_t *labels, int B) {
    if (B < 1 || B > m->max_batch) return -1.0;
    m->acts[0] = x;
    forward(m, B);
    f64 loss = softmax_xent(m->acts[m->nlayers], labels, B, m->nclasses, m->gbuf[0]);
    backward(m, B, m->gbuf[0]);
    return loss;
}

/* torch.optim.SGD without dampening/weight decay: buf = μ·buf + g; p -= lr·buf (μ = 0: p -= lr·g) */
EXPORT(fl_sgd_step) void fl_sgd_step(Model *m, f32 lr, f32 momentum) {
    int n = m->nparams, j = 0;
    f32 *p = m->params, *g = m->grads, *b = m->mom;
    v128_t vl = wasm_f32x4_splat(lr), vm = wasm_f32x4_splat(momentum);
    if (momentum != 0.0f) {
        for (; j + 4 <= n; j += 4) {
            v128_t nb = wasm_f32x4_add(wasm_f32x4_mul(vm, wasm_v128_load(b + j)), wasm_v128_load(g + j));
            wasm_v128_store(b + j, nb);
            wasm_v128_store(p + j, wasm_f32x4_sub(wasm_v128_load(p + j), wasm_f32x4_mul(vl, nb)));
        }
        for (; j < n; j++) { b[j] = momentum * b[j] + g[j]; p[j] -= lr * b[j]; }
    } else {
        for (; j + 4 <= n; j += 4)
            wasm_v128_store(p + j, wasm_f32x4_sub(wasm_v128_load(p + j), wasm_f32x4_mul(vl, wasm_v128_load(g + j))));
        for (; j < n; j++) p[j] -= lr * g[j];
    }
}

/* One epoch of mini-batch SGD over n examples x (n × in_size), labels y, visited in the order perm[0..n).
 * Returns the sum of the batch losses (divide by the number of batches for torch's mean). */
EXPORT(fl_train_epoch)
f64 fl_train_epoch(Model *m, const f32 *x, const int32_t *y, const int32_t *perm, int n, int batch, f32 lr, f32 momentum) {
    if (batch < 1 || batch > m->max_batch) return -1.0;
    f64 total = 0.0;
    int D = m->in_size;
    for (int i = 0; i < n; i += batch) {
        int B = n - i < batch ? n - i : batch;
        for (int s = 0; s < B; s++) {
            int idx = perm[i + s];
            __builtin_memcpy(m->xbuf + (size_t)s * D, x + (size_t)idx * D, (size_t)D * 4);
            m->ybuf[s] = y[idx];
        }
        total += fl_loss_grad(m, m->xbuf, m->ybuf, B);
        fl_sgd_step(m, lr, momentum);
    }
    return total;
}

/* Mean loss and number of correct argmax predictions over n examples; out[0] = loss, out[1] = correct. */
EXPORT(fl_evaluate) void fl_evaluate(Model *m, const f32 *x, const int32_t *y, int n, f64 *out) {
    f64 loss = 0.0;
    int correct = 0, C = m->nclasses;
    for (int i = 0; i < n; i += m->max_batch) {
        int B = n - i < m->max_batch ? n - i : m->max_batch;
        m->acts[0] = (f32 *)(x + (size_t)i * m->in_size);
        forward(m, B);
        const f32 *lg = m->acts[m->nlayers];
        loss += softmax_xent(lg, y + i, B, C, m->gbuf[0]) * B;
        for (int s = 0; s < B; s++) {
            const f32 *l = lg + (size_t)s * C;
            int best = 0;
            for (int j = 1; j < C; j++) if (l[j] > l[best]) best = j;
            correct += best == y[i + s];
        }
    }
    out[0] = loss / (n > 0 ? n : 1);
    out[1] = correct;
}
