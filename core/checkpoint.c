// checkpoint.c: the mslab checkpoint format (see checkpoint.h) and the llama2.c v0 importer.
//
// Layout of an mslab checkpoint, little-endian (offsets in bytes):
//   0   "MSLABCKP"
//   8   u32 version (1)
//   12  u32 header_bytes (96)
//   16  header: i32 dim, layers, heads, kv_heads, ffn, vocab, seq_len, tied, rope_style,
//               f32 rope_base, norm_eps, i64 step, u64 rng[4], u64 n_params, u32 has_optimizer
//   112 payload: f32 params[n_params], then if has_optimizer f32 adam_m[n_params], adam_v[n_params]
//   end u64 FNV-1a 64 of every byte before it (magic, header and payload)
// The parameters are the model's one contiguous buffer in P_* order. Loading reads the file twice:
// once to check the checksum, then to fill the model, so a bad file never half-loads a model.
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "mslab's on-disk formats assume a little-endian host"
#endif

#define CKPT_MAGIC "MSLABCKP"
#define CKPT_PREFIX 16        // magic, version, header_bytes
#define CKPT_HEADER_BYTES 96
#define CHUNK_FLOATS (1u << 20) // floats per host staging chunk (4 MiB)

// ---- little-endian fields -----------------------------------------------------------------------
static void put_u32(unsigned char *p, uint32_t v) { memcpy(p, &v, 4); }
static void put_u64(unsigned char *p, uint64_t v) { memcpy(p, &v, 8); }
static uint32_t get_u32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t get_u64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return v; }

// ModelConfig fields in declaration order: names for messages, offsets for (de)serialisation.
static const struct { const char *name; size_t off; int is_float; } cfg_fields[] = {
    {"dim", offsetof(ModelConfig, dim), 0},
    {"layers", offsetof(ModelConfig, layers), 0},
    {"heads", offsetof(ModelConfig, heads), 0},
    {"kv_heads", offsetof(ModelConfig, kv_heads), 0},
    {"ffn", offsetof(ModelConfig, ffn), 0},
    {"vocab", offsetof(ModelConfig, vocab), 0},
    {"seq_len", offsetof(ModelConfig, seq_len), 0},
    {"tied", offsetof(ModelConfig, tied), 0},
    {"rope_style", offsetof(ModelConfig, rope_style), 0},
    {"rope_base", offsetof(ModelConfig, rope_base), 1},
    {"norm_eps", offsetof(ModelConfig, norm_eps), 1},
};
#define N_CFG_FIELDS ((int)(sizeof cfg_fields / sizeof cfg_fields[0]))
_Static_assert(sizeof(ModelConfig) == 11 * 4, "checkpoint.c serialises 11 ModelConfig fields");

static int cfg_int(const ModelConfig *c, int i) { int v; memcpy(&v, (const char *)c + cfg_fields[i].off, 4); return v; }
static float cfg_float(const ModelConfig *c, int i) { float v; memcpy(&v, (const char *)c + cfg_fields[i].off, 4); return v; }

// Writes "field is X in the file, Y in the model" for the first differing field into buf; returns
// the field's index or -1 when equal. shape_only compares the fields that fix the weights' shapes.
static int cfg_diff(const ModelConfig *file, const ModelConfig *model, int shape_only, char *buf, size_t n) {
    for (int i = 0; i < N_CFG_FIELDS; i++) {
        const char *name = cfg_fields[i].name;
        if (shape_only && (!strcmp(name, "seq_len") || !strcmp(name, "rope_style") ||
                           !strcmp(name, "rope_base") || !strcmp(name, "norm_eps")))
            continue;
        if (cfg_fields[i].is_float) {
            float a = cfg_float(file, i), b = cfg_float(model, i);
            if (memcmp(&a, &b, 4) != 0) {
                snprintf(buf, n, "%s is %.9g in the file, %.9g in the model", name, a, b);
                return i;
            }
        } else {
            int a = cfg_int(file, i), b = cfg_int(model, i);
            if (a != b) {
                snprintf(buf, n, "%s is %d in the file, %d in the model", name, a, b);
                return i;
            }
        }
    }
    return -1;
}

// Plausibility of a config read from a file (so sizes can be computed without overflow).
static int cfg_sane(const ModelConfig *c, char *buf, size_t n) {
    const int big = 1 << 24;
    for (int i = 0; i < 7; i++) {
        int v = cfg_int(c, i);
        if (v <= 0 || v > big) { snprintf(buf, n, "%s = %d is out of range", cfg_fields[i].name, v); return -1; }
    }
    if (c->dim % c->heads) { snprintf(buf, n, "heads (%d) does not divide dim (%d)", c->heads, c->dim); return -1; }
    if (c->heads % c->kv_heads) { snprintf(buf, n, "kv_heads (%d) does not divide heads (%d)", c->kv_heads, c->heads); return -1; }
    if (c->tied != 0 && c->tied != 1) { snprintf(buf, n, "tied = %d", c->tied); return -1; }
    if (c->rope_style != ROPE_INTERLEAVED && c->rope_style != ROPE_HALVES) { snprintf(buf, n, "rope_style = %d", c->rope_style); return -1; }
    if (!(isfinite(c->rope_base) && c->rope_base > 0)) { snprintf(buf, n, "rope_base = %g", c->rope_base); return -1; }
    if (!(isfinite(c->norm_eps) && c->norm_eps >= 0)) { snprintf(buf, n, "norm_eps = %g", c->norm_eps); return -1; }
    double C = c->dim, L = c->layers, F = c->ffn, V = c->vocab;
    if (2 * V * C + L * (4 * C * C + 3 * F * C + 2 * C) + C > 1e15) {
        snprintf(buf, n, "the config implies more than 1e15 parameters");
        return -1;
    }
    return 0;
}

// Element counts of each tensor in P_* order, as 64-bit (file offsets are 64-bit everywhere here).
static uint64_t param_sizes(const ModelConfig *c, uint64_t sz[P_COUNT]) {
    size_t n[P_COUNT];
    uint64_t total = model_param_sizes(c, n);
    for (int i = 0; i < P_COUNT; i++) sz[i] = n[i];
    return total;
}

typedef struct {
    ModelConfig cfg;
    int64_t step;
    uint64_t rng[4];
    uint64_t n_params;
    uint32_t has_opt;
} Header;

static void header_encode(unsigned char *p, const Header *h) {
    for (int i = 0; i < N_CFG_FIELDS; i++) memcpy(p + 4 * i, (const char *)&h->cfg + cfg_fields[i].off, 4);
    put_u64(p + 44, (uint64_t)h->step);
    for (int i = 0; i < 4; i++) put_u64(p + 52 + 8 * i, h->rng[i]);
    put_u64(p + 84, h->n_params);
    put_u32(p + 92, h->has_opt);
}

static void header_decode(const unsigned char *p, Header *h) {
    memset(h, 0, sizeof *h);
    for (int i = 0; i < N_CFG_FIELDS; i++) memcpy((char *)&h->cfg + cfg_fields[i].off, p + 4 * i, 4);
    h->step = (int64_t)get_u64(p + 44);
    for (int i = 0; i < 4; i++) h->rng[i] = get_u64(p + 52 + 8 * i);
    h->n_params = get_u64(p + 84);
    h->has_opt = get_u32(p + 92);
}

// ---- small file helpers ------------------------------------------------------------------------------
static int read_exact(FILE *f, void *p, size_t n) { return fread(p, 1, n, f) == n ? 0 : -1; }

static int file_size(FILE *f, uint64_t *size) {
    struct stat st;
    if (fstat(fileno(f), &st) != 0) return -1;
    *size = (uint64_t)st.st_size;
    return 0;
}

// mkdir -p of the directory part of path (best effort; the fopen that follows reports failures).
static void make_parent_dirs(const char *path) {
    char *p = ms_strdup(path);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = 0;
        mkdir(p, 0755);
        *s = '/';
    }
    free(p);
}

static void fsync_parent_dir(const char *path) {
    char *p = ms_strdup(path);
    char *slash = strrchr(p, '/');
    const char *dir = ".";
    if (slash) {
        if (slash == p) slash[1] = 0;
        else *slash = 0;
        dir = p;
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(p);
}

// ---- save ---------------------------------------------------------------------------------------
static int write_hashed(FILE *f, const void *p, size_t n, uint64_t *h) {
    *h = ms_fnv1a(*h, p, n);
    return fwrite(p, 1, n, f) == n ? 0 : -1;
}

int checkpoint_save(const char *path, const Model *m, const TrainState *st) {
    uint64_t sz[P_COUNT];
    char why[256];
    if (cfg_sane(&m->cfg, why, sizeof why) != 0) return ms_fail("checkpoint %s: model config: %s", path, why);
    uint64_t n = param_sizes(&m->cfg, sz);
    if (n != m->params.total)
        return ms_fail("checkpoint %s: the model holds %zu parameters, its config implies %llu", path,
                       m->params.total, (unsigned long long)n);
    Header h = {.cfg = m->cfg, .n_params = n};
    if (st) {
        h.step = st->step;
        memcpy(h.rng, st->rng.s, sizeof h.rng);
        h.has_opt = st->adam_m && st->adam_v;
    }
    unsigned char pre[CKPT_PREFIX + CKPT_HEADER_BYTES];
    memcpy(pre, CKPT_MAGIC, 8);
    put_u32(pre + 8, CHECKPOINT_VERSION);
    put_u32(pre + 12, CKPT_HEADER_BYTES);
    header_encode(pre + CKPT_PREFIX, &h);

    size_t plen = strlen(path);
    char *tmp = ms_malloc(plen + 5);
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", 5);
    make_parent_dirs(path);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        int e = errno;
        free(tmp);
        return ms_fail("checkpoint %s: cannot create %s.tmp: %s", path, path, strerror(e));
    }
    uint64_t hash = MS_FNV_INIT;
    int bad = write_hashed(f, pre, sizeof pre, &hash);
    float *buf = ms_malloc((n < CHUNK_FLOATS ? n : CHUNK_FLOATS) * sizeof(float));
    for (uint64_t off = 0; !bad && off < n; off += CHUNK_FLOATS) {
        size_t k = (size_t)(n - off < CHUNK_FLOATS ? n - off : CHUNK_FLOATS);
        m->be->download(buf, m->params.base + off, k * sizeof(float));
        bad = write_hashed(f, buf, k * sizeof(float), &hash);
    }
    free(buf);
    if (h.has_opt) {
        const float *arr[2] = {st->adam_m, st->adam_v};
        for (int a = 0; a < 2; a++)
            for (uint64_t off = 0; !bad && off < n; off += CHUNK_FLOATS) {
                size_t k = (size_t)(n - off < CHUNK_FLOATS ? n - off : CHUNK_FLOATS);
                bad = write_hashed(f, arr[a] + off, k * sizeof(float), &hash);
            }
    }
    unsigned char tail[8];
    put_u64(tail, hash);
    if (!bad) bad = fwrite(tail, 1, 8, f) != 8;
    if (!bad) bad = fflush(f) != 0;
    if (!bad) bad = fsync(fileno(f)) != 0;
    int e = errno;
    if (fclose(f) != 0 && !bad) {
        bad = 1;
        e = errno;
    }
    if (!bad && rename(tmp, path) != 0) {
        bad = 1;
        e = errno;
    }
    if (bad) {
        unlink(tmp);
        free(tmp);
        return ms_fail("checkpoint %s: write failed: %s", path, strerror(e));
    }
    free(tmp);
    fsync_parent_dir(path);
    return 0;
}

// ---- load ---------------------------------------------------------------------------------------
// Opens path and checks everything that does not need the payload: magic, version, header size,
// file size against the header. On success *fp is positioned at the payload.
static int ckpt_open(const char *path, FILE **fp, Header *h, uint64_t *size_out) {
    FILE *f = fopen(path, "rb");
    if (!f) return ms_fail("checkpoint %s: cannot open: %s", path, strerror(errno));
    uint64_t size;
    if (file_size(f, &size) != 0) {
        fclose(f);
        return ms_fail("checkpoint %s: cannot stat: %s", path, strerror(errno));
    }
    unsigned char pre[CKPT_PREFIX + CKPT_HEADER_BYTES];
    size_t got = fread(pre, 1, sizeof pre, f);
    int rc = -1;
    size_t magic_n = got < 8 ? got : 8;
    if (memcmp(pre, CKPT_MAGIC, magic_n) != 0) {
        rc = ms_fail("checkpoint %s: not an mslab checkpoint", path);
        goto fail;
    }
    if (got < CKPT_PREFIX) {
        rc = ms_fail("checkpoint %s: truncated: expected at least %d bytes, found %llu", path,
                     CKPT_PREFIX + CKPT_HEADER_BYTES + 8, (unsigned long long)size);
        goto fail;
    }
    uint32_t version = get_u32(pre + 8), hb = get_u32(pre + 12);
    if (version > CHECKPOINT_VERSION) {
        rc = ms_fail("checkpoint %s: version %u is newer than this mslab (%d)", path, version, CHECKPOINT_VERSION);
        goto fail;
    }
    if (version != CHECKPOINT_VERSION) {
        rc = ms_fail("checkpoint %s: unsupported version %u (this mslab reads version %d)", path, version,
                     CHECKPOINT_VERSION);
        goto fail;
    }
    if (hb != CKPT_HEADER_BYTES) {
        rc = ms_fail("checkpoint %s: corrupt: header size %u, expected %d", path, hb, CKPT_HEADER_BYTES);
        goto fail;
    }
    if (got < sizeof pre) {
        rc = ms_fail("checkpoint %s: truncated: expected at least %d bytes, found %llu", path,
                     CKPT_PREFIX + CKPT_HEADER_BYTES + 8, (unsigned long long)size);
        goto fail;
    }
    header_decode(pre + CKPT_PREFIX, h);
    if (h->has_opt > 1) {
        rc = ms_fail("checkpoint %s: corrupt: has_optimizer = %u", path, h->has_opt);
        goto fail;
    }
    if (h->n_params > ((uint64_t)1 << 56)) {
        rc = ms_fail("checkpoint %s: corrupt: n_params = %llu", path, (unsigned long long)h->n_params);
        goto fail;
    }
    uint64_t expect = sizeof pre + 4 * h->n_params * (h->has_opt ? 3 : 1) + 8;
    if (size < expect) {
        rc = ms_fail("checkpoint %s: truncated: expected %llu bytes, found %llu", path,
                     (unsigned long long)expect, (unsigned long long)size);
        goto fail;
    }
    if (size > expect) {
        rc = ms_fail("checkpoint %s: corrupt: expected %llu bytes, found %llu (trailing data)", path,
                     (unsigned long long)expect, (unsigned long long)size);
        goto fail;
    }
    *fp = f;
    *size_out = size;
    return 0;
fail:
    fclose(f);
    return rc;
}

// After the checksum: the header's config must be plausible and agree with n_params.
static int check_header_config(const char *path, const Header *h) {
    char why[256];
    if (cfg_sane(&h->cfg, why, sizeof why) != 0) return ms_fail("checkpoint %s: corrupt config: %s", path, why);
    uint64_t sz[P_COUNT], n = param_sizes(&h->cfg, sz);
    if (n != h->n_params)
        return ms_fail("checkpoint %s: corrupt: n_params %llu, the config implies %llu", path,
                       (unsigned long long)h->n_params, (unsigned long long)n);
    return 0;
}

int checkpoint_read_config(const char *path, ModelConfig *cfg) {
    FILE *f;
    Header h;
    uint64_t size;
    if (ckpt_open(path, &f, &h, &size) != 0) return -1;
    fclose(f);
    if (check_header_config(path, &h) != 0) return -1;
    *cfg = h.cfg;
    return 0;
}

int checkpoint_load(const char *path, Model *m, TrainState *st) {
    FILE *f;
    Header h;
    uint64_t size;
    if (ckpt_open(path, &f, &h, &size) != 0) return -1;
    int rc = -1;
    float *buf = ms_malloc(CHUNK_FLOATS * sizeof(float));

    // pass 1: checksum of everything before the last 8 bytes
    if (fseeko(f, 0, SEEK_SET) != 0) { rc = ms_fail("checkpoint %s: seek failed: %s", path, strerror(errno)); goto out; }
    uint64_t hash = MS_FNV_INIT, left = size - 8;
    while (left) {
        size_t k = (size_t)(left < CHUNK_FLOATS * sizeof(float) ? left : CHUNK_FLOATS * sizeof(float));
        if (read_exact(f, buf, k) != 0) { rc = ms_fail("checkpoint %s: read error", path); goto out; }
        hash = ms_fnv1a(hash, buf, k);
        left -= k;
    }
    unsigned char tail[8];
    if (read_exact(f, tail, 8) != 0) { rc = ms_fail("checkpoint %s: read error", path); goto out; }
    if (get_u64(tail) != hash) { rc = ms_fail("checkpoint %s: corrupt: checksum mismatch", path); goto out; }
    if (check_header_config(path, &h) != 0) goto out;
    char why[256];
    if (cfg_diff(&h.cfg, &m->cfg, 0, why, sizeof why) >= 0) {
        rc = ms_fail("checkpoint %s: config mismatch: %s", path, why);
        goto out;
    }
    if (m->params.total != h.n_params) {
        rc = ms_fail("checkpoint %s: the file holds %llu parameters, the model %zu", path,
                     (unsigned long long)h.n_params, m->params.total);
        goto out;
    }

    // pass 2: fill the model and the train state
    if (fseeko(f, CKPT_PREFIX + CKPT_HEADER_BYTES, SEEK_SET) != 0) { rc = ms_fail("checkpoint %s: seek failed", path); goto out; }
    uint64_t n = h.n_params;
    for (uint64_t off = 0; off < n; off += CHUNK_FLOATS) {
        size_t k = (size_t)(n - off < CHUNK_FLOATS ? n - off : CHUNK_FLOATS);
        if (read_exact(f, buf, k * sizeof(float)) != 0) { rc = ms_fail("checkpoint %s: read error", path); goto out; }
        m->be->upload(m->params.base + off, buf, k * sizeof(float));
    }
    if (st) {
        float *arr[2] = {st->adam_m, st->adam_v};
        for (int a = 0; a < 2; a++) {
            if (!arr[a]) {
                if (h.has_opt && fseeko(f, (off_t)(4 * n), SEEK_CUR) != 0) { rc = ms_fail("checkpoint %s: seek failed", path); goto out; }
            } else if (!h.has_opt) {
                memset(arr[a], 0, n * sizeof(float)); // no optimizer state saved: a fresh Adam
            } else if (read_exact(f, arr[a], n * sizeof(float)) != 0) {
                rc = ms_fail("checkpoint %s: read error", path);
                goto out;
            }
        }
        st->step = h.step;
        memcpy(st->rng.s, h.rng, sizeof h.rng);
    }
    rc = 0;
out:
    free(buf);
    fclose(f);
    return rc;
}

// ---- llama2.c v0 ----------------------------------------------------------------------------------
// Header: 7 x i32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size (< 0: untied),
// seq_len), then f32 arrays in our P_* order up to rms_final, then freq_cis_real and freq_cis_imag
// ([seq_len][head_size/2] each, skipped), then wcls when untied.
static int llama2c_header(const char *path, FILE *f, ModelConfig *cfg, uint64_t *freq_floats) {
    uint64_t size;
    if (file_size(f, &size) != 0) return ms_fail("llama2c %s: cannot stat: %s", path, strerror(errno));
    int32_t hd[7];
    if (size < sizeof hd || read_exact(f, hd, sizeof hd) != 0)
        return ms_fail("llama2c %s: truncated: %llu bytes, smaller than the 28-byte header", path,
                       (unsigned long long)size);
    if ((uint32_t)hd[0] == 0x616b3432u)
        return ms_fail("llama2c %s: this is a newer llama2.c export (magic \"ak42\", version %d); only the "
                       "legacy version 0 format is supported", path, hd[1]);
    ModelConfig c = {0};
    c.dim = hd[0];
    c.ffn = hd[1];
    c.layers = hd[2];
    c.heads = hd[3];
    c.kv_heads = hd[4];
    c.vocab = hd[5] == INT32_MIN ? 0 : (hd[5] < 0 ? -hd[5] : hd[5]);
    c.seq_len = hd[6];
    c.tied = hd[5] > 0;
    c.rope_style = ROPE_INTERLEAVED;
    c.rope_base = 10000.0f;
    c.norm_eps = 1e-5f;
    char why[256];
    if (cfg_sane(&c, why, sizeof why) != 0)
        return ms_fail("llama2c %s: not a llama2.c v0 checkpoint (header: %s)", path, why);
    int hs = c.dim / c.heads;
    if (hs % 2) return ms_fail("llama2c %s: head size %d is odd", path, hs);
    uint64_t sz[P_COUNT], n = param_sizes(&c, sz);
    *freq_floats = (uint64_t)c.seq_len * (uint64_t)(hs / 2);
    uint64_t expect = 28 + 4 * (n + 2 * *freq_floats);
    if (size != expect)
        return ms_fail("llama2c %s: %s: expected %llu bytes for dim %d, hidden %d, layers %d, heads %d, "
                       "kv_heads %d, vocab %d, seq_len %d; found %llu", path,
                       size < expect ? "truncated" : "wrong size", (unsigned long long)expect, c.dim, c.ffn,
                       c.layers, c.heads, c.kv_heads, hd[5], c.seq_len, (unsigned long long)size);
    *cfg = c;
    return 0;
}

int llama2c_read_config(const char *path, ModelConfig *cfg) {
    FILE *f = fopen(path, "rb");
    if (!f) return ms_fail("llama2c %s: cannot open: %s", path, strerror(errno));
    uint64_t freq;
    int rc = llama2c_header(path, f, cfg, &freq);
    fclose(f);
    return rc;
}

int llama2c_load(const char *path, Model *m) {
    FILE *f = fopen(path, "rb");
    if (!f) return ms_fail("llama2c %s: cannot open: %s", path, strerror(errno));
    ModelConfig c;
    uint64_t freq, sz[P_COUNT];
    int rc = -1;
    float *buf = NULL;
    if (llama2c_header(path, f, &c, &freq) != 0) goto out;
    if (!m) { // header and size checked, nothing to fill
        rc = 0;
        goto out;
    }
    char why[256];
    if (cfg_diff(&c, &m->cfg, 1, why, sizeof why) >= 0) {
        rc = ms_fail("llama2c %s: config mismatch: %s", path, why);
        goto out;
    }
    param_sizes(&c, sz);
    for (int p = 0; p < P_COUNT; p++)
        if (m->params.size[p] != sz[p]) {
            rc = ms_fail("llama2c %s: model tensor %d has %zu elements, the file %llu", path, p,
                         m->params.size[p], (unsigned long long)sz[p]);
            goto out;
        }
    buf = ms_malloc(CHUNK_FLOATS * sizeof(float));
    for (int p = 0; p < P_COUNT; p++) {
        if (p == P_WCLS && fseeko(f, (off_t)(8 * freq), SEEK_CUR) != 0) { // skip freq_cis_real/imag
            rc = ms_fail("llama2c %s: seek failed", path);
            goto out;
        }
        for (uint64_t off = 0; off < sz[p]; off += CHUNK_FLOATS) {
            size_t k = (size_t)(sz[p] - off < CHUNK_FLOATS ? sz[p] - off : CHUNK_FLOATS);
            if (read_exact(f, buf, k * sizeof(float)) != 0) {
                rc = ms_fail("llama2c %s: read error", path);
                goto out;
            }
            m->be->upload(m->params.t[p] + off, buf, k * sizeof(float));
        }
    }
    rc = 0;
out:
    free(buf);
    fclose(f);
    return rc;
}
