// safetensors.c: HF Llama config.json + *.safetensors import and export (see safetensors.h).
#include "safetensors.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "common.h"

#define MAX_HEADER (100u << 20) // 100 MB: far above any real header

// ---- a minimal JSON reader -----------------------------------------------------------------------
typedef struct {
    const char *p, *e;
} Js;

static void js_ws(Js *j) {
    while (j->p < j->e && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) j->p++;
}

static int js_lit(Js *j, char c) {
    js_ws(j);
    if (j->p < j->e && *j->p == c) {
        j->p++;
        return 1;
    }
    return 0;
}

// A string into out[cap] (escapes decoded; \u as '?' beyond ASCII). 0 ok, -1 malformed/too long.
static int js_string(Js *j, char *out, size_t cap) {
    js_ws(j);
    if (j->p >= j->e || *j->p != '"') return -1;
    j->p++;
    size_t n = 0;
    while (j->p < j->e && *j->p != '"') {
        char c = *j->p++;
        if (c == '\\') {
            if (j->p >= j->e) return -1;
            c = *j->p++;
            switch (c) {
            case 'n': c = '\n'; break;
            case 't': c = '\t'; break;
            case 'r': c = '\r'; break;
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case 'u': {
                if (j->e - j->p < 4) return -1;
                char hex[5] = {j->p[0], j->p[1], j->p[2], j->p[3], 0};
                char *end;
                long v = strtol(hex, &end, 16);
                if (end != hex + 4) return -1;
                j->p += 4;
                c = v < 128 ? (char)v : '?';
                break;
            }
            default: break; // \" \\ \/
            }
        }
        if (n + 1 >= cap) return -1;
        out[n++] = c;
    }
    if (j->p >= j->e) return -1;
    j->p++;
    out[n] = 0;
    return 0;
}

static int js_number(Js *j, double *v) {
    js_ws(j);
    char buf[64];
    size_t n = 0;
    while (j->p + n < j->e && n + 1 < sizeof buf && strchr("+-0123456789.eE", j->p[n])) n++;
    if (!n) return -1;
    memcpy(buf, j->p, n);
    buf[n] = 0;
    char *end;
    *v = strtod(buf, &end);
    if (end != buf + n) return -1;
    j->p += n;
    return 0;
}

static int js_word(Js *j, const char *w) {
    js_ws(j);
    size_t n = strlen(w);
    if ((size_t)(j->e - j->p) >= n && !memcmp(j->p, w, n)) {
        j->p += n;
        return 1;
    }
    return 0;
}

static int js_skip(Js *j, int depth) {
    if (depth > 64) return -1;
    js_ws(j);
    if (j->p >= j->e) return -1;
    char tmp[4096];
    double d;
    switch (*j->p) {
    case '"': {
        // long strings: skip without copying
        j->p++;
        while (j->p < j->e && *j->p != '"') j->p += *j->p == '\\' ? 2 : 1;
        if (j->p >= j->e) return -1;
        j->p++;
        return 0;
    }
    case '{':
        j->p++;
        if (js_lit(j, '}')) return 0;
        do {
            if (js_string(j, tmp, sizeof tmp) || !js_lit(j, ':') || js_skip(j, depth + 1)) return -1;
        } while (js_lit(j, ','));
        return js_lit(j, '}') ? 0 : -1;
    case '[':
        j->p++;
        if (js_lit(j, ']')) return 0;
        do {
            if (js_skip(j, depth + 1)) return -1;
        } while (js_lit(j, ','));
        return js_lit(j, ']') ? 0 : -1;
    default:
        if (js_word(j, "true") || js_word(j, "false") || js_word(j, "null")) return 0;
        return js_number(j, &d);
    }
}

// An array of non-negative integers (at most max). Returns the count or -1.
static int js_int_array(Js *j, uint64_t *out, int max) {
    if (!js_lit(j, '[')) return -1;
    int n = 0;
    if (js_lit(j, ']')) return 0;
    do {
        double v;
        if (n >= max || js_number(j, &v) || v < 0 || v != floor(v) || v > 9e15) return -1;
        out[n++] = (uint64_t)v;
    } while (js_lit(j, ','));
    return js_lit(j, ']') ? n : -1;
}

static char *read_text(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0;
    char *b = ms_malloc(cap);
    size_t k;
    while ((k = fread(b + n, 1, cap - n, f)) > 0) {
        n += k;
        if (n == cap) b = ms_realloc(b, cap *= 2);
    }
    fclose(f);
    *len = n;
    return b;
}

static char *join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *s = ms_malloc(a + b + 2);
    memcpy(s, dir, a);
    s[a] = '/';
    memcpy(s + a + 1, name, b + 1);
    return s;
}

// ---- config.json ---------------------------------------------------------------------------------
int hf_read_config(const char *dir, ModelConfig *cfg) {
    char *path = join(dir, "config.json");
    size_t len;
    char *text = read_text(path, &len);
    if (!text) {
        int rc = ms_fail("hf %s: cannot open: %s", path, strerror(errno));
        free(path);
        return rc;
    }
    ModelConfig c = model_config_default();
    c.rope_style = ROPE_HALVES;
    c.rope_base = 10000.0f;
    c.norm_eps = 1e-6f;
    c.tied = 0;
    c.seq_len = 2048;
    double v[8] = {0};
    int have[8] = {0}, kv_given = 0;
    static const char *const keys[8] = {"hidden_size", "num_hidden_layers", "num_attention_heads",
                                        "num_key_value_heads", "intermediate_size", "vocab_size",
                                        "max_position_embeddings", NULL};
    Js j = {text, text + len};
    int rc = -1;
    char key[256];
    if (!js_lit(&j, '{')) goto bad;
    if (!js_lit(&j, '}')) do {
        if (js_string(&j, key, sizeof key) || !js_lit(&j, ':')) goto bad;
        int i;
        for (i = 0; keys[i]; i++)
            if (!strcmp(key, keys[i])) break;
        if (js_word(&j, "null")) { // null: the default (e.g. num_key_value_heads in old configs)
            if (keys[i] && i != 3 && i != 6) {
                rc = ms_fail("hf %s: %s is null", path, key);
                goto out;
            }
        } else if (keys[i]) {
            double d;
            if (js_number(&j, &d) || d != floor(d) || d < 1 || d > 2147483647.0) {
                rc = ms_fail("hf %s: %s must be a positive integer", path, key);
                goto out;
            }
            v[i] = d, have[i] = 1;
        } else if (!strcmp(key, "rms_norm_eps") || !strcmp(key, "rope_theta")) {
            double d;
            if (js_number(&j, &d)) {
                rc = ms_fail("hf %s: %s must be a number", path, key);
                goto out;
            }
            if (key[1] == 'm') c.norm_eps = (float)d;
            else c.rope_base = (float)d;
        } else if (!strcmp(key, "tie_word_embeddings")) {
            if (js_word(&j, "true")) c.tied = 1;
            else if (js_word(&j, "false")) c.tied = 0;
            else {
                rc = ms_fail("hf %s: tie_word_embeddings must be true or false", path);
                goto out;
            }
        } else if (js_skip(&j, 0)) {
            goto bad;
        }
    } while (js_lit(&j, ','));
    if (!js_lit(&j, '}')) goto bad;
    for (int i = 0; i < 6; i++)
        if (!have[i] && i != 3) {
            rc = ms_fail("hf %s: missing %s", path, keys[i]);
            goto out;
        }
    kv_given = have[3];
    c.dim = (int)v[0], c.layers = (int)v[1], c.heads = (int)v[2];
    c.kv_heads = kv_given ? (int)v[3] : c.heads;
    c.ffn = (int)v[4], c.vocab = (int)v[5];
    if (have[6]) c.seq_len = (int)v[6];
    if (model_config_check(&c)) {
        char why[512];
        snprintf(why, sizeof why, "%s", ms_error());
        rc = ms_fail("hf %s: unsupported config: %s", path, why);
        goto out;
    }
    *cfg = c;
    rc = 0;
    goto out;
bad:
    rc = ms_fail("hf %s: malformed JSON near byte %ld", path, (long)(j.p - text));
out:
    free(text);
    free(path);
    return rc;
}

// ---- tensor names ------------------------------------------------------------------------------
static const struct { const char *suffix; int p; } layer_names[] = {
    {"self_attn.q_proj.weight", P_WQ},   {"self_attn.k_proj.weight", P_WK},
    {"self_attn.v_proj.weight", P_WV},   {"self_attn.o_proj.weight", P_WO},
    {"mlp.gate_proj.weight", P_W1},      {"mlp.down_proj.weight", P_W2},
    {"mlp.up_proj.weight", P_W3},        {"input_layernorm.weight", P_ATTN_NORM},
    {"post_attention_layernorm.weight", P_FFN_NORM},
};
#define N_LAYER_NAMES ((int)(sizeof layer_names / sizeof layer_names[0]))

static int is_layer_tensor(int p) { return p != P_WTE && p != P_FINAL_NORM && p != P_WCLS; }

// HF name -> (p, layer); 0 when it is not a model tensor.
static int hf_map(const char *name, int *p, int *layer) {
    *layer = 0;
    if (!strcmp(name, "model.embed_tokens.weight")) return *p = P_WTE, 1;
    if (!strcmp(name, "model.norm.weight")) return *p = P_FINAL_NORM, 1;
    if (!strcmp(name, "lm_head.weight")) return *p = P_WCLS, 1;
    int l, off = 0;
    if (sscanf(name, "model.layers.%d.%n", &l, &off) != 1 || off == 0 || l < 0) return 0;
    for (int i = 0; i < N_LAYER_NAMES; i++)
        if (!strcmp(name + off, layer_names[i].suffix)) {
            *p = layer_names[i].p, *layer = l;
            return 1;
        }
    return 0;
}

static void hf_name(int p, int l, char *out, size_t n) {
    if (p == P_WTE) snprintf(out, n, "model.embed_tokens.weight");
    else if (p == P_FINAL_NORM) snprintf(out, n, "model.norm.weight");
    else if (p == P_WCLS) snprintf(out, n, "lm_head.weight");
    else
        for (int i = 0; i < N_LAYER_NAMES; i++)
            if (layer_names[i].p == p) snprintf(out, n, "model.layers.%d.%s", l, layer_names[i].suffix);
}

// Shape of one slice of tensor p: rank 1 ([C]) or 2 ([rows, cols]).
static int slice_shape(const ModelConfig *c, int p, uint64_t shape[2]) {
    uint64_t C = c->dim, F = c->ffn, V = c->vocab, KVD = (uint64_t)c->kv_heads * (c->dim / c->heads);
    switch (p) {
    case P_WTE: case P_WCLS: shape[0] = V, shape[1] = C; return 2;
    case P_WQ: case P_WO: shape[0] = C, shape[1] = C; return 2;
    case P_WK: case P_WV: shape[0] = KVD, shape[1] = C; return 2;
    case P_W1: case P_W3: shape[0] = F, shape[1] = C; return 2;
    case P_W2: shape[0] = C, shape[1] = F; return 2;
    default: shape[0] = C; return 1;
    }
}

static float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint16_t f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); // NaN stays NaN
    u += 0x7fffu + ((u >> 16) & 1);                                           // nearest even
    return (uint16_t)(u >> 16);
}

static float f16_to_f32(uint16_t h) {
    uint32_t s = (uint32_t)(h >> 15) << 31, e = (h >> 10) & 31, m = h & 1023;
    float f;
    if (e == 0) {
        f = ldexpf((float)m, -24);
        return s ? -f : f;
    }
    uint32_t u = e == 31 ? s | 0x7f800000u | (m << 13) : s | ((e + 112) << 23) | (m << 13);
    memcpy(&f, &u, 4);
    return f;
}

// Permutes the rows of a [heads * hd, cols] projection between RoPE layouts, per head:
// to_halves: row 2i + j (interleaved pair i) -> row j * hd/2 + i; else the inverse.
static void permute_rows(float *dst, const float *src, int heads, int hd, int cols, int to_halves) {
    for (int h = 0; h < heads; h++)
        for (int i = 0; i < hd / 2; i++)
            for (int j = 0; j < 2; j++) {
                size_t inter = (size_t)h * hd + 2 * i + j, halves = (size_t)h * hd + j * (hd / 2) + i;
                size_t d = to_halves ? halves : inter, s = to_halves ? inter : halves;
                memcpy(dst + d * cols, src + s * cols, sizeof(float) * cols);
            }
}

// ---- loading -------------------------------------------------------------------------------------
static int load_file(const char *path, Model *m, unsigned char *found) {
    const ModelConfig *c = &m->cfg;
    FILE *f = fopen(path, "rb");
    if (!f) return ms_fail("safetensors %s: cannot open: %s", path, strerror(errno));
    struct stat st;
    uint64_t size = fstat(fileno(f), &st) == 0 ? (uint64_t)st.st_size : 0;
    unsigned char pre[8];
    char *hdr = NULL;
    void *raw = NULL;
    float *buf = NULL;
    int rc = -1;
    if (size < 8 || fread(pre, 1, 8, f) != 8) {
        rc = ms_fail("safetensors %s: truncated: %llu bytes, smaller than the 8-byte header length", path,
                     (unsigned long long)size);
        goto out;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | pre[i];
    if (hlen > MAX_HEADER || hlen < 2) {
        rc = ms_fail("safetensors %s: malformed: header length %llu", path, (unsigned long long)hlen);
        goto out;
    }
    if (8 + hlen > size) {
        rc = ms_fail("safetensors %s: truncated: header of %llu bytes, file of %llu", path,
                     (unsigned long long)hlen, (unsigned long long)size);
        goto out;
    }
    hdr = ms_malloc(hlen);
    if (fread(hdr, 1, hlen, f) != hlen) {
        rc = ms_fail("safetensors %s: read error in the header", path);
        goto out;
    }
    uint64_t data_len = size - 8 - hlen;
    Js j = {hdr, hdr + hlen};
    char name[512];
    if (!js_lit(&j, '{')) goto bad;
    if (!js_lit(&j, '}')) do {
        if (js_string(&j, name, sizeof name) || !js_lit(&j, ':')) goto bad;
        if (!strcmp(name, "__metadata__")) {
            if (js_skip(&j, 0)) goto bad;
            continue;
        }
        char dtype[32] = "", key[64];
        uint64_t shape[8], offs[2];
        int rank = -1, noffs = -1;
        if (!js_lit(&j, '{')) goto bad;
        if (!js_lit(&j, '}')) do {
            if (js_string(&j, key, sizeof key) || !js_lit(&j, ':')) goto bad;
            if (!strcmp(key, "dtype")) {
                if (js_string(&j, dtype, sizeof dtype)) goto bad;
            } else if (!strcmp(key, "shape")) {
                if ((rank = js_int_array(&j, shape, 8)) < 0) goto bad;
            } else if (!strcmp(key, "data_offsets")) {
                if ((noffs = js_int_array(&j, offs, 2)) != 2) goto bad;
            } else if (js_skip(&j, 0)) {
                goto bad;
            }
        } while (js_lit(&j, ','));
        if (!js_lit(&j, '}')) goto bad;
        if (!dtype[0] || rank < 0 || noffs != 2) {
            rc = ms_fail("safetensors %s: tensor %s: missing dtype, shape or data_offsets", path, name);
            goto out;
        }
        int p, l;
        if (!hf_map(name, &p, &l)) continue;     // not a model tensor (e.g. rotary inv_freq)
        if (p == P_WCLS && c->tied) continue;   // tied: the head is the embedding
        if (l >= c->layers) {
            rc = ms_fail("safetensors %s: tensor %s: layer %d, but the config has %d layers", path, name,
                         l, c->layers);
            goto out;
        }
        int esz = !strcmp(dtype, "F32") ? 4 : (!strcmp(dtype, "BF16") || !strcmp(dtype, "F16")) ? 2 : 0;
        if (!esz) {
            rc = ms_fail("safetensors %s: tensor %s: dtype %s is not supported (F32, BF16, F16)", path,
                         name, dtype);
            goto out;
        }
        uint64_t want[2] = {0, 1};
        int wrank = slice_shape(c, p, want);
        if (rank != wrank || shape[0] != want[0] || (wrank == 2 && shape[1] != want[1])) {
            char got_s[96] = "", want_s[64];
            for (int i = 0; i < rank && i < 4; i++)
                snprintf(got_s + strlen(got_s), sizeof got_s - strlen(got_s), "%s%llu", i ? ", " : "",
                         (unsigned long long)shape[i]);
            if (wrank == 2) snprintf(want_s, sizeof want_s, "%llu, %llu", (unsigned long long)want[0],
                                     (unsigned long long)want[1]);
            else snprintf(want_s, sizeof want_s, "%llu", (unsigned long long)want[0]);
            rc = ms_fail("safetensors %s: tensor %s: shape [%s], expected [%s]", path, name, got_s, want_s);
            goto out;
        }
        uint64_t numel = want[0] * (wrank == 2 ? want[1] : 1);
        if (offs[1] < offs[0] || offs[1] - offs[0] != numel * esz) {
            rc = ms_fail("safetensors %s: tensor %s: data_offsets [%llu, %llu] do not hold %llu %s values",
                         path, name, (unsigned long long)offs[0], (unsigned long long)offs[1],
                         (unsigned long long)numel, dtype);
            goto out;
        }
        if (offs[1] > data_len) {
            rc = ms_fail("safetensors %s: tensor %s: truncated: data ends at byte %llu of a %llu-byte "
                         "data section", path, name, (unsigned long long)offs[1],
                         (unsigned long long)data_len);
            goto out;
        }
        raw = ms_realloc(raw, numel * esz);
        buf = ms_realloc(buf, numel * sizeof(float));
        if (fseeko(f, (off_t)(8 + hlen + offs[0]), SEEK_SET) != 0 || fread(raw, 1, numel * esz, f) != numel * esz) {
            rc = ms_fail("safetensors %s: tensor %s: read error", path, name);
            goto out;
        }
        if (esz == 4) memcpy(buf, raw, numel * 4);
        else
            for (uint64_t i = 0; i < numel; i++) {
                uint16_t h;
                memcpy(&h, (char *)raw + 2 * i, 2);
                buf[i] = dtype[0] == 'B' ? bf16_to_f32(h) : f16_to_f32(h);
            }
        m->be->upload(m->params.t[p] + (size_t)l * numel, buf, numel * sizeof(float));
        found[p * c->layers + l] = 1;
    } while (js_lit(&j, ','));
    if (!js_lit(&j, '}')) goto bad;
    rc = 0;
    goto out;
bad:
    rc = ms_fail("safetensors %s: malformed header JSON near byte %ld", path, (long)(j.p - hdr));
out:
    free(hdr);
    free(raw);
    free(buf);
    fclose(f);
    return rc;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

// The shard files of dir (malloc'd paths): the index's weight_map values, else *.safetensors.
static int list_shards(const char *dir, char ***out, int *n_out) {
    char **files = NULL;
    int n = 0;
    char *ipath = join(dir, "model.safetensors.index.json");
    size_t len;
    char *text = read_text(ipath, &len);
    if (text) {
        Js j = {text, text + len};
        char key[512], val[512];
        int ok = js_lit(&j, '{');
        if (ok && !js_lit(&j, '}')) do {
            if (js_string(&j, key, sizeof key) || !js_lit(&j, ':')) { ok = 0; break; }
            if (strcmp(key, "weight_map")) {
                if (js_skip(&j, 0)) { ok = 0; break; }
                continue;
            }
            if (!js_lit(&j, '{')) { ok = 0; break; }
            if (!js_lit(&j, '}')) do {
                if (js_string(&j, key, sizeof key) || !js_lit(&j, ':') || js_string(&j, val, sizeof val) ||
                    strchr(val, '/')) { ok = 0; break; }
                int seen = 0;
                for (int i = 0; i < n; i++) seen |= !strcmp(strrchr(files[i], '/') + 1, val);
                if (!seen) {
                    files = ms_realloc(files, sizeof *files * (n + 1));
                    files[n++] = join(dir, val);
                }
            } while (js_lit(&j, ','));
            if (!ok || !js_lit(&j, '}')) { ok = 0; break; }
        } while (js_lit(&j, ','));
        free(text);
        if (!ok || !n) {
            for (int i = 0; i < n; i++) free(files[i]);
            free(files);
            int rc = ms_fail("hf %s: malformed index (expected a weight_map of tensor -> file)", ipath);
            free(ipath);
            return rc;
        }
    } else {
        DIR *d = opendir(dir);
        if (!d) {
            int rc = ms_fail("hf %s: cannot open directory: %s", dir, strerror(errno));
            free(ipath);
            return rc;
        }
        struct dirent *e;
        while ((e = readdir(d))) {
            size_t l = strlen(e->d_name);
            if (l > 12 && !strcmp(e->d_name + l - 12, ".safetensors")) {
                files = ms_realloc(files, sizeof *files * (n + 1));
                files[n++] = join(dir, e->d_name);
            }
        }
        closedir(d);
        if (!n) {
            free(ipath);
            return ms_fail("hf %s: no *.safetensors files", dir);
        }
    }
    free(ipath);
    qsort(files, n, sizeof *files, cmp_str);
    *out = files;
    *n_out = n;
    return 0;
}

int hf_load(const char *dir, Model *m) {
    const ModelConfig *c = &m->cfg;
    char **files = NULL;
    int n = 0;
    if (list_shards(dir, &files, &n)) return -1;
    unsigned char *found = ms_calloc((size_t)P_COUNT * c->layers, 1);
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) rc = load_file(files[i], m, found);
    for (int p = 0; p < P_COUNT && !rc; p++) {
        if (!m->params.size[p]) continue;
        for (int l = 0; l < (is_layer_tensor(p) ? c->layers : 1) && !rc; l++)
            if (!found[p * c->layers + l]) {
                char name[128];
                hf_name(p, l, name, sizeof name);
                rc = ms_fail("hf %s: missing tensor %s (in %d safetensors file%s)", dir, name, n,
                             n == 1 ? "" : "s");
            }
    }
    for (int i = 0; i < n; i++) free(files[i]);
    free(files);
    free(found);
    return rc;
}

// ---- export --------------------------------------------------------------------------------------
static void cat(char **b, size_t *len, size_t *cap, const char *fmt, ...) {
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int k = vsnprintf(*b + *len, *cap - *len, fmt, ap);
        va_end(ap);
        if ((size_t)k < *cap - *len) {
            *len += k;
            return;
        }
        *cap = *cap * 2 + k;
        *b = ms_realloc(*b, *cap);
    }
}

static void mkdirs(const char *dir) {
    char *p = ms_strdup(dir);
    for (char *s = p + 1; *s; s++)
        if (*s == '/') {
            *s = 0;
            mkdir(p, 0755);
            *s = '/';
        }
    mkdir(p, 0755);
    free(p);
}

int safetensors_export(const char *dir, const Model *m, int bf16) {
    const ModelConfig *c = &m->cfg;
    mkdirs(dir);
    char *cpath = join(dir, "config.json"), *tpath = join(dir, "model.safetensors");
    int rc = -1;
    FILE *f = fopen(cpath, "w");
    if (!f) {
        rc = ms_fail("export %s: cannot create: %s", cpath, strerror(errno));
        goto done;
    }
    fprintf(f, "{\n  \"architectures\": [\"LlamaForCausalLM\"],\n  \"model_type\": \"llama\",\n"
               "  \"hidden_size\": %d,\n  \"intermediate_size\": %d,\n  \"num_hidden_layers\": %d,\n"
               "  \"num_attention_heads\": %d,\n  \"num_key_value_heads\": %d,\n  \"vocab_size\": %d,\n"
               "  \"max_position_embeddings\": %d,\n  \"rms_norm_eps\": %.9g,\n  \"rope_theta\": %.9g,\n"
               "  \"tie_word_embeddings\": %s,\n  \"hidden_act\": \"silu\",\n  \"bos_token_id\": 1,\n"
               "  \"eos_token_id\": 2,\n  \"torch_dtype\": \"%s\"\n}\n",
            c->dim, c->ffn, c->layers, c->heads, c->kv_heads, c->vocab, c->seq_len, c->norm_eps,
            c->rope_base, c->tied ? "true" : "false", bf16 ? "bfloat16" : "float32");
    if (fclose(f) != 0) {
        rc = ms_fail("export %s: write failed", cpath);
        goto done;
    }
    // tensor order: embedding, layer by layer, final norm, head
    int (*order)[2] = ms_malloc(sizeof(int[2]) * (9 * (size_t)c->layers + 3)), nt = 0; // (p, layer)
    order[nt][0] = P_WTE, order[nt++][1] = 0;
    static const int per_layer[] = {P_ATTN_NORM, P_WQ, P_WK, P_WV, P_WO, P_FFN_NORM, P_W1, P_W2, P_W3};
    for (int l = 0; l < c->layers; l++)
        for (int i = 0; i < 9; i++) order[nt][0] = per_layer[i], order[nt++][1] = l;
    order[nt][0] = P_FINAL_NORM, order[nt++][1] = 0;
    if (!c->tied) order[nt][0] = P_WCLS, order[nt++][1] = 0;
    size_t len = 0, cap = 4096;
    char *h = ms_malloc(cap);
    cat(&h, &len, &cap, "{\"__metadata__\":{\"format\":\"pt\",\"producer\":\"mslab\"}");
    uint64_t off = 0;
    int esz = bf16 ? 2 : 4;
    for (int t = 0; t < nt; t++) {
        uint64_t shape[2] = {0, 1};
        int rank = slice_shape(c, order[t][0], shape);
        uint64_t numel = shape[0] * (rank == 2 ? shape[1] : 1);
        char name[128];
        hf_name(order[t][0], order[t][1], name, sizeof name);
        if (rank == 2)
            cat(&h, &len, &cap, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%llu,%llu],\"data_offsets\":[%llu,%llu]}",
                name, bf16 ? "BF16" : "F32", (unsigned long long)shape[0], (unsigned long long)shape[1],
                (unsigned long long)off, (unsigned long long)(off + numel * esz));
        else
            cat(&h, &len, &cap, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%llu],\"data_offsets\":[%llu,%llu]}",
                name, bf16 ? "BF16" : "F32", (unsigned long long)shape[0], (unsigned long long)off,
                (unsigned long long)(off + numel * esz));
        off += numel * esz;
    }
    cat(&h, &len, &cap, "}");
    while (len % 8) cat(&h, &len, &cap, " ");
    char *tmp = ms_malloc(strlen(tpath) + 5);
    sprintf(tmp, "%s.tmp", tpath);
    f = fopen(tmp, "wb");
    if (!f) {
        rc = ms_fail("export %s: cannot create: %s", tpath, strerror(errno));
        free(h), free(tmp), free(order);
        goto done;
    }
    unsigned char pre[8];
    for (int i = 0; i < 8; i++) pre[i] = (unsigned char)((uint64_t)len >> (8 * i));
    int bad = fwrite(pre, 1, 8, f) != 8 || fwrite(h, 1, len, f) != len;
    free(h);
    int hd = c->dim / c->heads;
    for (int t = 0; t < nt && !bad; t++) {
        int p = order[t][0], l = order[t][1];
        uint64_t shape[2] = {0, 1};
        int rank = slice_shape(c, p, shape);
        size_t numel = shape[0] * (rank == 2 ? shape[1] : 1);
        float *buf = ms_malloc(numel * sizeof(float));
        m->be->download(buf, m->params.t[p] + (size_t)l * numel, numel * sizeof(float));
        if (c->rope_style == ROPE_INTERLEAVED && (p == P_WQ || p == P_WK)) {
            float *q = ms_malloc(numel * sizeof(float));
            permute_rows(q, buf, (int)(shape[0] / hd), hd, (int)shape[1], 1);
            free(buf);
            buf = q;
        }
        if (bf16) {
            uint16_t *o = ms_malloc(numel * 2);
            for (size_t i = 0; i < numel; i++) o[i] = f32_to_bf16(buf[i]);
            bad = fwrite(o, 2, numel, f) != numel;
            free(o);
        } else {
            bad = fwrite(buf, 4, numel, f) != numel;
        }
        free(buf);
    }
    if (fclose(f) != 0) bad = 1;
    if (!bad && rename(tmp, tpath) != 0) bad = 1;
    if (bad) {
        unlink(tmp);
        rc = ms_fail("export %s: write failed", tpath);
    } else {
        rc = 0;
    }
    free(tmp);
    free(order);
done:
    free(cpath);
    free(tpath);
    return rc;
}

// ---- any source ----------------------------------------------------------------------------------
static int source_kind(const char *path) { // 0 hf dir, 1 mslab, 2 llama2.c, -1 missing
    struct stat st;
    if (stat(path, &st) != 0) return ms_fail("model source %s: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) return 0;
    FILE *f = fopen(path, "rb");
    if (!f) return ms_fail("model source %s: cannot open: %s", path, strerror(errno));
    char magic[8] = {0};
    size_t got = fread(magic, 1, 8, f);
    fclose(f);
    return got == 8 && !memcmp(magic, "MSLABCKP", 8) ? 1 : 2;
}

int model_source_read_config(const char *path, ModelConfig *cfg) {
    switch (source_kind(path)) {
    case 0: return hf_read_config(path, cfg);
    case 1: return checkpoint_read_config(path, cfg);
    case 2: return llama2c_read_config(path, cfg);
    default: return -1;
    }
}

static int same_shape(const ModelConfig *a, const ModelConfig *b) {
    return a->dim == b->dim && a->layers == b->layers && a->heads == b->heads &&
           a->kv_heads == b->kv_heads && a->ffn == b->ffn && a->vocab == b->vocab && a->tied == b->tied;
}

int model_source_load(const char *path, Model *m) {
    ModelConfig fc;
    int kind = source_kind(path);
    if (kind < 0 || model_source_read_config(path, &fc)) return -1;
    if (!same_shape(&fc, &m->cfg))
        return ms_fail("model source %s: its shape (dim %d, layers %d, heads %d, kv_heads %d, ffn %d, "
                       "vocab %d, tied %d) differs from the model's (dim %d, layers %d, heads %d, "
                       "kv_heads %d, ffn %d, vocab %d, tied %d)", path, fc.dim, fc.layers, fc.heads,
                       fc.kv_heads, fc.ffn, fc.vocab, fc.tied, m->cfg.dim, m->cfg.layers, m->cfg.heads,
                       m->cfg.kv_heads, m->cfg.ffn, m->cfg.vocab, m->cfg.tied);
    if (kind == 0) return hf_load(path, m);
    if (kind == 2) return llama2c_load(path, m);
    // mslab checkpoint: load into a model of the file's own config, then copy the weights
    Model tmp;
    if (model_create(&tmp, &fc, m->be)) return -1;
    int rc = checkpoint_load(path, &tmp, NULL);
    if (!rc) {
        float *h = ms_malloc(tmp.params.total * sizeof(float));
        tmp.be->download(h, tmp.params.base, tmp.params.total * sizeof(float));
        m->be->upload(m->params.base, h, tmp.params.total * sizeof(float));
        free(h);
    }
    model_destroy(&tmp);
    return rc;
}
