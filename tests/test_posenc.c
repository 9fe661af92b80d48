// Position kinds (core/posenc.c, lua/lpos.c): rotation invariants, closed forms checked against
// values computed here, CRD mappings on hand cases, gradients through every kind, the Lua section's
// errors and the per-step logging of the values used.
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../core/common.h"
#include "../core/model.h"
#include "../core/posenc.h"
#include "../core/store.h"
#include "../lua/host.h"
#include "test.h"

static const Backend *be(void) { return backend_cpu(); }

// A config for kind k with a given scale (crd-ntk: cycle 8 for sequences of 6, so it wraps).
static PosConfig pos_kind(int k, double s) {
    PosConfig pc;
    pos_config_default(&pc);
    pc.kind = k;
    if (k >= POS_PI) pc.scale.set = 1, pc.scale.value = s;
    if (k == POS_CRD_NTK) pc.cycle.set = 1, pc.cycle.value = 8;
    return pc;
}

static ModelConfig small_model(int dim, int heads, int layers, int seq) {
    ModelConfig c = model_config_default();
    c.dim = dim, c.heads = heads, c.kv_heads = heads, c.layers = layers, c.seq_len = seq;
    c.ffn = 24, c.vocab = 20;
    return c;
}

// q(m) . k(n) after RoPE at float positions pm, pn with inv_freq (one head of dim D)
static double score(const float *q, const float *k, float pm, float pn, const float *inv, int D,
                    int style) {
    float qr[64], kr[64];
    be()->rope_fwd(qr, q, &pm, inv, 1, 1, D, style);
    be()->rope_fwd(kr, k, &pn, inv, 1, 1, D, style);
    double s = 0;
    for (int i = 0; i < D; i++) s += (double)qr[i] * kr[i];
    return s;
}

TEST(posenc_rotation_preserves_norms) {
    ModelConfig mc = small_model(32, 2, 3, 6);
    int D = 16, L = 3, B = 2, T = 6, H = 2, N = B * T;
    Rng r;
    rng_seed(&r, 5);
    float x[2 * 6 * 2 * 16], out[2 * 6 * 2 * 16], pos[3 * 2 * 6], inv[8];
    for (size_t i = 0; i < sizeof x / sizeof x[0]; i++) x[i] = rng_normal(&r);
    for (int k = 0; k < POS_NKINDS; k++)
        for (int style = 0; style < 2; style++) {
            PosConfig pc = pos_kind(k, 4);
            PosState st;
            CHECK(pos_train(&pc, &mc, 3, 7, B, T, pos, inv, &st) == 0);
            for (int l = 0; l < L; l++) {
                be()->rope_fwd(out, x, pos + l * N, inv, N, H, D, style);
                double worst = 0;
                for (int n = 0; n < N * H; n++)
                    for (int i = 0; i < D / 2; i++) {
                        int a = style ? i : 2 * i, b = style ? i + D / 2 : 2 * i + 1;
                        const float *u = x + n * D, *v = out + n * D;
                        double n0 = hypot(u[a], u[b]), n1 = hypot(v[a], v[b]);
                        worst = fmax(worst, fabs(n1 - n0) / fmax(n0, 1e-3));
                    }
                if (worst > 1e-6) fprintf(stderr, "    kind %s layer %d\n", pos_kind_names[k], l);
                CHECK(worst <= 1e-6);
            }
        }
}

// rope, pi, ntk (and the static dynamic-ntk / yarn at the training length): the score depends on
// m - n only, and does depend on it.
TEST(posenc_scores_depend_on_relative_position_only) {
    ModelConfig mc = small_model(32, 2, 1, 64);
    int D = 16, T = 64;
    Rng r;
    rng_seed(&r, 9);
    float q[16], k[16], pos[64], inv[8];
    for (int i = 0; i < D; i++) q[i] = rng_normal(&r), k[i] = rng_normal(&r);
    int kinds[] = {POS_ROPE, POS_PI, POS_NTK, POS_DYNAMIC_NTK, POS_YARN};
    for (int ki = 0; ki < 5; ki++)
        for (int style = 0; style < 2; style++) {
            PosConfig pc = pos_kind(kinds[ki], 4);
            PosState st;
            CHECK(pos_train(&pc, &mc, 0, 1, 1, T, pos, inv, &st) == 0);
            double worst = 0, spread = 0, s0 = score(q, k, pos[5], pos[2], inv, D, style);
            for (int c = 1; c + 5 < T; c += 7) {
                double s = score(q, k, pos[5 + c], pos[2 + c], inv, D, style);
                worst = fmax(worst, fabs(s - s0) / fmax(fabs(s0), 1));
            }
            for (int d = 1; d < 40; d += 5) spread += fabs(score(q, k, pos[d + 3], pos[3], inv, D, style) - s0);
            if (worst > 2e-5) fprintf(stderr, "    kind %s style %d\n", pos_kind_names[kinds[ki]], style);
            CHECK(worst <= 2e-5);
            CHECK(spread > 1e-2); // the positions do reach the score
        }
}

TEST(posenc_pi_equals_rope_at_scaled_positions) {
    ModelConfig mc = small_model(32, 2, 2, 16);
    int B = 2, T = 16, D = 16, N = B * T;
    float pos_pi[2 * 32], inv_pi[8], pos_rope[2 * 32], inv_rope[8], hand[32];
    PosConfig pi = pos_kind(POS_PI, 4), rope = pos_kind(POS_ROPE, 0);
    PosState st;
    CHECK(pos_train(&pi, &mc, 0, 1, B, T, pos_pi, inv_pi, &st) == 0);
    CHECK(pos_train(&rope, &mc, 0, 1, B, T, pos_rope, inv_rope, &st) == 0);
    for (int i = 0; i < D / 2; i++) CHECK(inv_pi[i] == inv_rope[i]);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            hand[b * T + t] = t / 4.0f;
            CHECK(pos_rope[b * T + t] == (float)t); // rope: the model's default positions ...
        }
    // ... and the model's default inv_freq, so a rope run is what it was before positions existed
    Model m;
    CHECK(model_create(&m, &mc, be()) == 0);
    float model_inv[8];
    be()->download(model_inv, m.inv_freq, sizeof model_inv);
    CHECK(memcmp(model_inv, inv_rope, sizeof model_inv) == 0);
    model_destroy(&m);
    Rng r;
    rng_seed(&r, 3);
    float x[32 * 16], a[32 * 16], b[32 * 16];
    for (int i = 0; i < N * D; i++) x[i] = rng_normal(&r);
    be()->rope_fwd(a, x, pos_pi + N, inv_pi, N, 1, D, ROPE_HALVES); // layer 1
    be()->rope_fwd(b, x, hand, inv_rope, N, 1, D, ROPE_HALVES);
    CHECK(memcmp(a, b, sizeof a) == 0);
    // inference: the same scaled positions, as the model's default stride
    CHECK(pos_infer(&pi, &mc, 0, 64, inv_pi, &st) == 0);
    CHECK(st.stride == 0.25);
}

TEST(posenc_yarn_factors_and_temperature) {
    // Llama-2 7B numbers: d = 128, theta 1e4, L0 4096, s = 16. The ramp ends, by hand:
    // low = floor(128 ln(4096 / (2 pi 32)) / (2 ln 1e4)) = floor(20.94) = 20,
    // high = ceil(128 ln(4096 / (2 pi)) / (2 ln 1e4)) = ceil(45.03) = 46.
    int d = 128;
    float inv[64];
    pos_yarn_inv_freq(inv, 1e4, 16, 4096, 32, 1, d);
    for (int i = 0; i < d / 2; i++) {
        double f = pow(1e4, -2.0 * i / d), ratio = inv[i] / f;
        double want = i <= 20 ? 1.0 : i >= 46 ? 1.0 / 16 : 1.0 - (i - 20) / 26.0 * (1 - 1.0 / 16);
        CHECK_REL(ratio, want, 1e-6, 1e-9);
    }
    CHECK_REL(inv[33] / pow(1e4, -66.0 / 128), (1 + 1.0 / 16) / 2, 1e-6, 0); // mid-ramp: the mean
    CHECK_NEAR(pos_yarn_mscale(16), 1.2772588722239782, 1e-12);              // 0.1 ln 16 + 1
    CHECK_NEAR(pos_yarn_mscale(1), 1.0, 0);
    CHECK_NEAR(pos_yarn_mscale(0.5), 1.0, 0);
    // through the config: mscale with attn_factor, and the switch
    ModelConfig mc = small_model(32, 2, 1, 32);
    PosConfig pc = pos_kind(POS_YARN, 8);
    pc.attn_factor = 2;
    PosState st;
    float pos[32];
    CHECK(pos_train(&pc, &mc, 0, 1, 1, 32, pos, inv, &st) == 0);
    CHECK_NEAR(st.mscale, 2 * (0.1 * log(8) + 1), 1e-12);
    pc.temperature = 0;
    CHECK(pos_train(&pc, &mc, 0, 1, 1, 32, pos, inv, &st) == 0);
    CHECK_NEAR(st.mscale, 2, 0);

    // The model applies mscale to q and k: logits equal those of a model whose wq is scaled by
    // mscale^2 (RoPE is linear), i.e. attention logits times mscale^2.
    ModelConfig c = small_model(16, 2, 2, 8);
    c.kv_heads = 1;
    Model a, b;
    CHECK(model_create(&a, &c, be()) == 0);
    CHECK(model_create(&b, &c, be()) == 0);
    model_init_weights(&a, 4);
    model_init_weights(&b, 4);
    size_t nq = b.params.size[P_WQ];
    float *wq = malloc(nq * sizeof(float));
    be()->download(wq, b.params.t[P_WQ], nq * sizeof(float));
    float ms = 1.3f;
    for (size_t i = 0; i < nq; i++) wq[i] *= 10 * ms * ms; // x10: make attention non-uniform
    be()->upload(b.params.t[P_WQ], wq, nq * sizeof(float));
    for (size_t i = 0; i < nq; i++) wq[i] /= ms * ms;
    be()->upload(a.params.t[P_WQ], wq, nq * sizeof(float));
    free(wq);
    model_set_rope_mscale(&a, ms);
    int tok[16];
    for (int i = 0; i < 16; i++) tok[i] = (i * 7) % 20;
    model_forward(&a, tok, NULL, 2, 8);
    model_forward(&b, tok, NULL, 2, 8);
    float la[16 * 20], lb[16 * 20];
    model_get_logits(&a, la);
    model_get_logits(&b, lb);
    CHECK(test_max_rel_err(la, lb, 16 * 20, 1e-3) < 1e-5);
    model_destroy(&a);
    model_destroy(&b);
}

// Finds a step whose layer-0 offset (cycle `range`) is `want`, so a hand-written array can be
// compared with the mapping.
static int step_with_offset(uint64_t seed, uint64_t range, uint64_t want) {
    for (int step = 0; step < 10000; step++)
        if (pos_crd_draw(seed, step, 0, 0, 0, range) == want) return step;
    return -1;
}

TEST(posenc_crd_mappings_by_hand) {
    ModelConfig mc = small_model(32, 2, 3, 6);
    int L = 3, B = 2, T = 6, N = B * T;
    float pos[3 * 12], pos2[3 * 12], inv[8];
    PosState st;
    // cyclic, cycle 8, offset 5: positions 5 6 7 0 1 2 (wrap inside the sequence)
    PosConfig pc = pos_kind(POS_CRD_NTK, 16);
    int step = step_with_offset(11, 8, 5);
    CHECK(step >= 0);
    CHECK(pos_train(&pc, &mc, step, 11, B, T, pos, inv, &st) == 0);
    const float wrap[6] = {5, 6, 7, 0, 1, 2};
    CHECK(memcmp(pos, wrap, sizeof wrap) == 0);
    CHECK(memcmp(pos + T, wrap, sizeof wrap) == 0); // offset "layer": the batch shares it
    CHECK(st.offset == 5 && st.cycle == 8);
    // per-layer offsets: each layer its own draw, reproducible from (seed, step, layer)
    int differ = 0;
    for (int l = 0; l < L; l++) {
        uint64_t o = pos_crd_draw(11, step, l, 0, 0, 8);
        for (int t = 0; t < T; t++) CHECK(pos[l * N + t] == (float)((t + o) % 8));
        differ += l > 0 && o != 5;
    }
    CHECK(differ > 0);
    CHECK(pos_train(&pc, &mc, step, 11, B, T, pos2, inv, &st) == 0);
    CHECK(memcmp(pos, pos2, sizeof pos) == 0); // a recomputation sees the same offsets
    CHECK(pos_train(&pc, &mc, step + 1, 11, B, T, pos2, inv, &st) == 0);
    CHECK(memcmp(pos, pos2, sizeof pos) != 0); // the next step draws anew
    // offset per sequence: layers share, sequences differ (for some step)
    pc.offset = CRD_OFFSET_SEQUENCE;
    int seq_differ = 0;
    for (int s = 0; s < 4; s++) {
        CHECK(pos_train(&pc, &mc, s, 11, B, T, pos, inv, &st) == 0);
        CHECK(memcmp(pos, pos + N, N * sizeof(float)) == 0);
        CHECK(memcmp(pos, pos + 2 * N, N * sizeof(float)) == 0);
        seq_differ += memcmp(pos, pos + T, T * sizeof(float)) != 0;
    }
    CHECK(seq_differ > 0);
    // no offset: plain 0..T-1 (T <= cycle, nothing wraps)
    pc.offset = CRD_OFFSET_NONE;
    CHECK(pos_train(&pc, &mc, 3, 11, B, T, pos, inv, &st) == 0);
    for (int i = 0; i < L * N; i++) CHECK(pos[i] == (float)(i % T));
    // not cyclic: t + o with o < offset_max
    pc.offset = CRD_OFFSET_LAYER;
    pc.cyclic = 0;
    pc.offset_max.set = 1, pc.offset_max.value = 1000;
    CHECK(pos_train(&pc, &mc, 3, 11, B, T, pos, inv, &st) == 0);
    CHECK(pos[0] < 1000 && pos[5] == pos[0] + 5 && st.offset_max == 1000);
    // truncation "cycle": T drawn in [T, T + cycle/2), then (t + o) mod T_drawn
    pc.cyclic = 1;
    pc.offset_max.set = 0;
    pc.truncation = CRD_TRUNC_CYCLE;
    pc.cycle.value = 20;
    for (int s = 0; s < 20; s++) {
        CHECK(pos_train(&pc, &mc, s, 11, B, T, pos, inv, &st) == 0);
        uint64_t cyc = (uint64_t)T + pos_crd_draw(11, s, 0, 0, 1, 10);
        uint64_t o = pos_crd_draw(11, s, 0, 0, 0, cyc);
        CHECK(st.cycle_drawn == (double)cyc && cyc >= (uint64_t)T && cyc < (uint64_t)T + 10);
        for (int t = 0; t < T; t++) CHECK(pos[t] == (float)((t + o) % cyc));
    }
}

// Across the wrap, the key sits at relative offset (m - n) - T: the score equals rope's there.
TEST(posenc_crd_wrap_is_a_relative_shift) {
    ModelConfig mc = small_model(32, 2, 1, 6);
    float pos[6], inv[8], q[16], k[16];
    Rng r;
    rng_seed(&r, 2);
    for (int i = 0; i < 16; i++) q[i] = rng_normal(&r), k[i] = rng_normal(&r);
    PosConfig pc = pos_kind(POS_CRD_NTK, 16);
    PosState st;
    CHECK(pos_train(&pc, &mc, step_with_offset(11, 8, 5), 11, 1, 6, pos, inv, &st) == 0);
    // query t = 4 (position 1), key t = 1 (position 6): distance 3 seen as 3 - 8 = -5
    CHECK(pos[4] == 1 && pos[1] == 6);
    CHECK_REL(score(q, k, pos[4], pos[1], inv, 16, ROPE_HALVES), score(q, k, 0, 5, inv, 16, ROPE_HALVES),
              1e-5, 1);
}

TEST(posenc_ntk_bases_and_inference) {
    // spec 3.2: d = 128, L0 4096, Lc = T = 32768 (here: the defaults for train.seq 16384)
    ModelConfig mc = small_model(128, 1, 1, 16384);
    float *pos = malloc(sizeof(float) * 16384), inv[64];
    const double s[3] = {16, 4096, 16384}, base[3] = {1.218e6, 3.375e8, 1.380e9};
    PosState st;
    for (int i = 0; i < 3; i++) {
        PosConfig pc = pos_kind(POS_CRD_NTK, s[i]);
        pc.cycle.set = 0; // default: 2 * train.seq = 32768
        CHECK(pos_train(&pc, &mc, 0, 1, 1, 16384, pos, inv, &st) == 0);
        CHECK_REL(st.base, base[i], 1e-3, 0);
        CHECK(inv[1] == (float)pow(st.base, -2.0 / 128));
        // inference defaults to the factor training ended with: the same base, raw positions
        PosState is;
        CHECK(pos_infer(&pc, &mc, 0, 65536, inv, &is) == 0);
        CHECK_REL(is.base, st.base, 1e-12, 0);
        CHECK(is.stride == 1);
    }
    free(pos);
    // inference S per length (table), theta at and below L0 (the draft), or always
    ModelConfig m2 = small_model(32, 2, 1, 64); // d = 16, L0 = 16
    PosConfig pc = pos_kind(POS_CRD_NTK, 4);
    pc.cycle.value = 128;
    pc.n_infer = 2;
    pc.infer_lengths[0] = 16, pc.infer_values[0] = 3;
    pc.infer_lengths[1] = 256, pc.infer_values[1] = 64;
    CHECK(pos_infer(&pc, &m2, 0, 256, inv, &st) == 0);
    CHECK_REL(st.base, 1e4 * pow(64, 16.0 / 14), 1e-12, 0);
    CHECK(st.scale == 64);
    CHECK(pos_infer(&pc, &m2, 0, 16, inv, &st) == 0);
    CHECK(st.base == 1e4);
    pc.infer_base = CRD_INFER_ALWAYS;
    CHECK(pos_infer(&pc, &m2, 0, 16, inv, &st) == 0);
    CHECK_REL(st.base, 1e4 * pow(3, 16.0 / 14), 1e-12, 0);
    // a table without an eval length beyond L0 is an error naming the key
    int lengths[2] = {256, 512};
    CHECK(pos_config_check(&pc, &m2, lengths, 2) == -1);
    CHECK_STR(ms_error(), "positions.infer_scale: no value for eval length 512 (eval.ppl.lengths)");
    // static ntk and dynamic ntk (HF: factor alpha * T / L0 - (alpha - 1) beyond L0)
    PosConfig ntk = pos_kind(POS_NTK, 8), dyn = pos_kind(POS_DYNAMIC_NTK, 2);
    CHECK(pos_infer(&ntk, &m2, 0, 64, inv, &st) == 0);
    CHECK_REL(st.base, 1e4 * pow(8, 16.0 / 14), 1e-12, 0);
    CHECK(pos_infer(&dyn, &m2, 0, 64, inv, &st) == 0);
    CHECK(st.base == 1e4); // at the training length
    CHECK(pos_infer(&dyn, &m2, 0, 256, inv, &st) == 0);
    CHECK_REL(st.base, 1e4 * pow(2.0 * 4 - 1, 16.0 / 14), 1e-12, 0);
}

TEST(posenc_schedules) {
    PosSchedule s = {.set = 1, .value = 16, .double_every = 2000};
    double v;
    int steps[] = {0, 1999, 2000, 3999, 4000, 100000};
    double want[] = {16, 16, 32, 32, 64, 16 * pow(2, 50)};
    for (int i = 0; i < 6; i++) {
        CHECK(pos_schedule_at(&s, "positions.scale", steps[i], &v) == 0);
        CHECK(v == want[i]);
    }
    s.max = 48;
    CHECK(pos_schedule_at(&s, "positions.scale", 4000, &v) == 0 && v == 48);
    // the cycle doubling at runtime, and a value that becomes invalid mid-run
    ModelConfig mc = small_model(32, 2, 1, 8);
    PosConfig pc = pos_kind(POS_CRD_NTK, 4);
    pc.cycle.value = 8, pc.cycle.double_every = 2;
    float pos[8], inv[8];
    PosState st;
    CHECK(pos_train(&pc, &mc, 5, 1, 1, 8, pos, inv, &st) == 0 && st.cycle == 32);
    pc.cycle.value = 4, pc.cycle.double_every = 0;
    CHECK(pos_train(&pc, &mc, 5, 1, 1, 8, pos, inv, &st) == -1);
    CHECK_STR(ms_error(), "positions.cycle (4) at step 5 must be >= train.seq (8)");
}

// ---- gradients through every kind --------------------------------------------------------------

// Directional derivatives (along the gradient in wq, in wk, in all parameters) against central
// differences, with the
// kind's positions installed before every forward: the backward must rotate each layer with the
// positions its forward used (crd: per-layer offsets that wrap), and undo yarn's mscale.
TEST(posenc_gradcheck_every_kind) {
    ModelConfig c = small_model(16, 4, 2, 7);
    c.kv_heads = 2;
    int B = 2, T = 7, N = B * T, tok[14], tgt[14];
    Rng r;
    rng_seed(&r, 21);
    for (int i = 0; i < N; i++) tok[i] = (int)rng_below(&r, 20), tgt[i] = (int)rng_below(&r, 20);
    for (int k = 0; k < POS_NKINDS; k++) {
        PosConfig pc = pos_kind(k, 3);
        Model m;
        CHECK(model_create(&m, &c, be()) == 0);
        size_t total = m.params.total;
        float *p = malloc(total * 4), *g = malloc(total * 4), *pp = malloc(total * 4);
        size_t off_q = 0, off_k;
        for (int t = 0; t < P_WQ; t++) off_q += m.params.size[t];
        off_k = off_q + m.params.size[P_WQ];
        // large wq, wk: peaked attention, so the loss feels the positions (a wrong rotation or
        // mscale in the backward shows far above the finite-difference noise)
        for (size_t i = 0; i < total; i++)
            p[i] = (i >= off_q && i < off_k + m.params.size[P_WK] ? 1.5f : 0.3f) * rng_normal(&r);
        be()->upload(m.params.base, p, total * 4);
        PosState st;
        CHECK(pos_apply_train(&m, &pc, 2, 5, B, T, &st) == 0);
        if (k == POS_YARN) CHECK(st.mscale > 1.05);
        model_zero_grad(&m);
        model_forward(&m, tok, tgt, B, T);
        model_backward(&m);
        be()->download(g, m.grads.base, total * 4);
        struct { size_t off, n; } dirs[3] = {{off_q, m.params.size[P_WQ]}, {off_k, m.params.size[P_WK]}, {0, total}};
        for (int d = 0; d < 3; d++) {
            float *u = calloc(total, 4);
            double norm = 0, analytic = 0, f[2], h = d < 2 ? 1e-2 : 2e-3; // all: more curvature
            // along the gradient itself (restricted to the tensor): the largest derivative, so a
            // backward that is off by any factor cannot hide under the noise
            for (size_t i = 0; i < dirs[d].n; i++) u[dirs[d].off + i] = g[dirs[d].off + i];
            for (size_t i = 0; i < total; i++) norm += (double)u[i] * u[i];
            for (size_t i = 0; i < total; i++) u[i] /= sqrt(norm), analytic += (double)g[i] * u[i];
            for (int s = 0; s < 2; s++) {
                for (size_t i = 0; i < total; i++) pp[i] = p[i] + (s ? -h : h) * u[i];
                be()->upload(m.params.base, pp, total * 4);
                CHECK(pos_apply_train(&m, &pc, 2, 5, B, T, &st) == 0);
                f[s] = model_forward(&m, tok, tgt, B, T);
            }
            double numeric = (f[0] - f[1]) / (2 * h);
            if (getenv("VERBOSE") || fabs(numeric - analytic) > 1e-2 * fmax(fabs(analytic), 1e-3))
                fprintf(stderr, "    kind %s direction %d: analytic %.6g numeric %.6g\n",
                        pos_kind_names[k], d, analytic, numeric);
            CHECK_REL(analytic, numeric, 1e-2, 1e-3);
            free(u);
        }
        free(p), free(g), free(pp);
        model_destroy(&m);
    }
}

// ---- the Lua section ---------------------------------------------------------------------------

static void write_corpus(const char *dir) {
    char path[600];
    for (int d = 0; d < 2; d++) {
        snprintf(path, sizeof path, "%s/doc%d.txt", dir, d);
        FILE *f = fopen(path, "w");
        for (int i = 0; i < 300; i++)
            fprintf(f, "And the light %d was called day, and the darkness %d night.\n", d, i);
        fclose(f);
    }
}

// Runs `body` after `local c = corpus` in a fresh directory; returns lua_host_run's status and
// puts the db path in db.
static int run_script(const char *body, char *db, size_t n) {
    const char *dir = test_tmpdir();
    char corpus[512], script[512], text[8192];
    snprintf(corpus, sizeof corpus, "%s/corpus", dir);
    mkdir(corpus, 0755);
    write_corpus(corpus);
    snprintf(script, sizeof script, "%s/pos.lua", dir);
    snprintf(db, n, "%s/results.db", dir);
    snprintf(text, sizeof text,
             "local ms = require 'mslab'\nlocal c = ms.corpus { path = '%s', cache = '%s/cache' }\n"
             "local M = { dim = 16, layers = 2, heads = 2, ffn = 32 }\n%s",
             corpus, dir, body);
    test_write_file(script, text);
    ms_clear_error();
    return lua_host_run(script, db, 0, NULL);
}

static const char *script_error(const char *body) {
    char db[512];
    CHECK(run_script(body, db, sizeof db) == 1);
    static char msg[1024];
    const char *e = ms_error(), *base = strstr(e, "pos.lua:");
    snprintf(msg, sizeof msg, "%s", base ? base : e);
    return msg;
}

TEST(posenc_lua_errors_name_the_line) {
    CHECK_STR(script_error("ms.run { data = c, model = M, train = { seq = 128 },\n"
                           "  positions = { kind = 'crd-ntk',\n"
                           "    cycle = 64 } }\n"),
              "pos.lua:6: positions.cycle (64) must be >= train.seq (128)");
    CHECK_STR(script_error("ms.run { data = c, model = M,\n"
                           "  positions = { kind = 'pi', scale = -2 } }\n"),
              "pos.lua:5: positions.scale (-2) must be > 0");
    CHECK_STR(script_error("ms.run { data = c, model = M, positions = { kind = 'yarn' } }\n"),
              "pos.lua:4: positions.scale: required for kind \"yarn\"");
    CHECK_STR(script_error("ms.run { data = c, model = M,\n  positions = { kind = 'rope',\n"
                           "  cycle = 4096 } }\n"),
              "pos.lua:6: positions.cycle: not used by kind \"rope\" (used by: crd-ntk)");
    CHECK_STR(script_error("ms.run { data = c, model = M, positions = { kind = 'crd-ntk',\n"
                           "  scale = { value = 16, every = 100 } } }\n"),
              "pos.lua:5: positions.scale.every: unknown key (known here: value, double_every, max)");
    CHECK_STR(script_error("ms.run { data = c, model = M, positions = { kind = 'crd-ntk',\n"
                           "  offset = 'batch' } }\n"),
              "pos.lua:5: positions.offset: \"batch\" is not one of \"layer\", \"sequence\", "
              "\"layer-sequence\", \"none\"");
    CHECK_STR(script_error("ms.run { data = c, model = M, positions = { kind = 'crd-ntk',\n"
                           "  cyclic = true, offset_max = 100 } }\n"),
              "pos.lua:5: positions.offset_max: only used with positions.cyclic = false");
    CHECK_STR(script_error("ms.run { data = c, model = M, positions = { kind = 'crd-ntk',\n"
                           "  cycle = 'long' } }\n"),
              "pos.lua:5: positions.cycle: expected a number, a table { value, double_every, max } "
              "or a function of the step, got string");
    CHECK_STR(script_error("ms.run { data = c, model = M, eval = { ppl = { lengths = { 32, 64 } } },\n"
                           "  positions = { kind = 'crd-ntk', infer_scale = { [32] = 4 } } }\n"),
              "pos.lua:5: positions.infer_scale: no value for eval length 64 (eval.ppl.lengths)");
}

// A crd-ntk run whose scale is a Lua function of the step and whose cycle doubles: the values
// used are in metrics at the steps they changed, the config in params and config_json, the
// inference S per eval length in params; a failing function fails the run, naming key and step.
TEST(posenc_lua_schedules_are_logged) {
    char db[512];
    int rc = run_script(
        "local r = ms.run { name = 'crd', data = c, model = M, seed = 2,\n"
        "  positions = { kind = 'crd-ntk', scale = function(step) return 4 * 2 ^ (step // 3) end,\n"
        "                cycle = { value = 16, double_every = 4 }, offset = 'layer-sequence',\n"
        "                infer_scale = function(len) return len / 4 end },\n"
        "  train = { seq = 16, batch = 2, steps = 8, log_every = 100 },\n"
        "  eval = { ppl = { lengths = { 16, 64 }, max_tokens = 128 } } }\n"
        "assert(r.status == 'done', r.error)\n"
        "local bad = ms.run { name = 'bad', data = c, model = M,\n"
        "  positions = { kind = 'pi', scale = function(step) if step == 2 then error('boom') end return 2 end },\n"
        "  train = { seq = 16, batch = 2, steps = 5 } }\n"
        "assert(bad.status == 'failed' and bad.error:find('positions.scale: the function failed at step 2', 1, true), bad.error)\n"
        "assert(bad.error:find('boom', 1, true), bad.error)\n",
        db, sizeof db);
    CHECK(rc == 0);
    if (rc) fprintf(stderr, "    %s\n", ms_error());
    Store *s;
    CHECK(store_open(&s, db, 1) == 0);
    // scale 4 (steps 0-2), 8 (3-5), 16 (6-7), cycle 16 (0-3), 32 (4-7): every value is logged at
    // metric step 1, where one changed (4, 5, 7) and at the last (8)
    CHECK_STR(test_db_first(s, "SELECT group_concat(step || ':' || value, ' ') FROM (SELECT step, value FROM "
                       "metrics WHERE name = 'pos.scale' AND run_id = 1 ORDER BY step)"),
              "1:4.0 4:8.0 5:8.0 7:16.0 8:16.0");
    CHECK_STR(test_db_first(s, "SELECT group_concat(step || ':' || value, ' ') FROM (SELECT step, value FROM "
                       "metrics WHERE name = 'pos.cycle' AND run_id = 1 ORDER BY step)"),
              "1:16.0 4:16.0 5:32.0 7:32.0 8:32.0");
    CHECK_STR(test_db_first(s, "SELECT count(*) FROM metrics WHERE name = 'pos.offset' AND run_id = 1"), "5");
    CHECK_STR(test_db_first(s, "SELECT value FROM params WHERE run_id = 1 AND key = 'positions.kind'"), "crd-ntk");
    CHECK(strstr(test_db_first(s, "SELECT value FROM params WHERE run_id = 1 AND key = 'positions.scale'"),
                 "function at ") != NULL);
    CHECK_STR(test_db_first(s, "SELECT value FROM params WHERE run_id = 1 AND key = 'positions.cycle'"),
              "{\"value\":16,\"double_every\":4}");
    CHECK_STR(test_db_first(s, "SELECT value FROM params WHERE run_id = 1 AND key = 'positions.infer.64.scale'"), "16");
    CHECK_STR(test_db_first(s, "SELECT value FROM params WHERE run_id = 1 AND key = 'positions.infer.16.scale'"), "4");
    CHECK(strstr(test_db_first(s, "SELECT config_json FROM runs WHERE id = 1"),
                 "\"positions\":{\"kind\":\"crd-ntk\",\"base\":10000,\"scale\":\"function at ") != NULL);
    CHECK(strstr(test_db_first(s, "SELECT config_json FROM runs WHERE id = 1"),
                 "\"cycle\":{\"value\":16,\"double_every\":4},\"truncation\":\"phase\","
                 "\"offset\":\"layer-sequence\",\"infer_base\":\"beyond-orig\"") != NULL);
    CHECK_STR(test_db_first(s, "SELECT status FROM runs WHERE id = 2"), "failed");
    store_close(s);
}

// A config that fails after its schedule function was anchored (e.g. one bad run of a sweep) must
// not keep the function alive for the rest of the script: the next run's read drops it.
TEST(posenc_failed_config_releases_schedule_functions) {
    char db[512];
    int rc = run_script(
        "local probe = setmetatable({}, { __mode = 'k' })\n"
        "do\n"
        "  local f = function(step) return 2 end\n"
        "  probe[f] = true\n"
        "  local ok = pcall(ms.run, { data = c, model = M, positions = { kind = 'pi', scale = f },\n"
        "                             eval = { ppl = { lengths = { 0 } } } })\n"
        "  assert(not ok, 'the config should fail')\n"
        "end\n"
        "pcall(ms.run, { data = c, model = M, eval = { ppl = { lengths = { 0 } } } })\n"
        "collectgarbage(); collectgarbage()\n"
        "assert(next(probe) == nil, 'a failed config left its schedule function anchored')\n",
        db, sizeof db);
    CHECK(rc == 0);
    if (rc) fprintf(stderr, "    %s\n", ms_error());
}
