// ltensor.c: tensors and attention objects for Lua scripts, so a script can look at what an
// attention kind computes and selects without training anything, and trade arrays with NumPy.
//
//   local T = ms.tensor
//   local q = T.randn({1, 256, 4, 32}, 7)          -- [B, T, H, D], seed 7
//   local k, v = T.randn({1, 256, 2, 32}, 8), T.randn({1, 256, 2, 32}, 9)
//   local attn = ms.attention { kind = "ms", w = 8, top = 8, merge = 2 }
//   local out = attn(q, k, v)                      -- [B, T, H, D] f32 (and lse [B, H, T])
//   local sel, info = attn:selection(q, k)         -- [B, H, groups, S] i32 region ids (0-based)
//   sel:save("sel.npy"); q:save("q.npy", "bf16")
//
// Tensors are C-order arrays of one dtype: f32, f64, bf16 (stored and saved as uint16 bits, as
// NumPy has no bfloat16), i32, i64. Indices in Lua calls are 1-based; region ids inside index
// tensors are 0-based (data, as NumPy sees them).
#include "ltensor.h"

#include <lauxlib.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../core/attention.h"
#include "../core/common.h"
#include "../core/ops.h"
#include "lattention.h"
#include "lconfig.h"

#define TENSOR_MT "mslab.tensor"
#define ATTN_MT "mslab.attention"
#define MAXDIM 8

enum { TD_F32, TD_F64, TD_BF16, TD_I32, TD_I64, TD_N };
static const char *const dtype_names[] = {"f32", "f64", "bf16", "i32", "i64", NULL};
static const char *const npy_descr[] = {"<f4", "<f8", "<u2", "<i4", "<i8"};
static const size_t dtype_size[] = {4, 8, 2, 4, 8};

typedef struct {
    int dtype, ndim;
    int64_t shape[MAXDIM];
    int64_t n;
    void *data;
} Tensor;

// ---- elements ----------------------------------------------------------------------------------

static float bf16_to_f32(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint16_t f32_to_bf16(float f) { // round to nearest even; NaN stays NaN
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffff) > 0x7f800000) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fff + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

static double get_d(const Tensor *t, int64_t i) {
    switch (t->dtype) {
    case TD_F32: return ((const float *)t->data)[i];
    case TD_F64: return ((const double *)t->data)[i];
    case TD_BF16: return bf16_to_f32(((const uint16_t *)t->data)[i]);
    case TD_I32: return ((const int32_t *)t->data)[i];
    default: return (double)((const int64_t *)t->data)[i];
    }
}

static void set_d(Tensor *t, int64_t i, double v) {
    switch (t->dtype) {
    case TD_F32: ((float *)t->data)[i] = (float)v; break;
    case TD_F64: ((double *)t->data)[i] = v; break;
    case TD_BF16: ((uint16_t *)t->data)[i] = f32_to_bf16((float)v); break;
    case TD_I32: ((int32_t *)t->data)[i] = (int32_t)v; break;
    default: ((int64_t *)t->data)[i] = (int64_t)v; break;
    }
}

// ---- construction --------------------------------------------------------------------------------

static Tensor *check_tensor(lua_State *L, int i) { return luaL_checkudata(L, i, TENSOR_MT); }

static Tensor *new_tensor(lua_State *L, int dtype, int ndim, const int64_t *shape) {
    Tensor *t = lua_newuserdatauv(L, sizeof *t, 0);
    memset(t, 0, sizeof *t);
    luaL_setmetatable(L, TENSOR_MT);
    t->dtype = dtype, t->ndim = ndim, t->n = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0) luaL_error(L, "tensor: negative size %lld", (long long)shape[d]);
        t->shape[d] = shape[d];
        t->n *= shape[d];
    }
    t->data = ms_calloc((size_t)(t->n ? t->n : 1), dtype_size[dtype]);
    return t;
}

static int read_dtype(lua_State *L, int i, int def) {
    if (lua_isnoneornil(L, i)) return def;
    const char *s = luaL_checkstring(L, i);
    for (int d = 0; dtype_names[d]; d++)
        if (!strcmp(s, dtype_names[d])) return d;
    return luaL_error(L, "tensor: dtype \"%s\" is not one of f32, f64, bf16, i32, i64", s);
}

static int read_shape(lua_State *L, int i, int64_t *shape) {
    luaL_checktype(L, i, LUA_TTABLE);
    int n = (int)luaL_len(L, i);
    if (n > MAXDIM) luaL_error(L, "tensor: at most %d dimensions", MAXDIM);
    for (int d = 0; d < n; d++) {
        lua_geti(L, i, d + 1);
        int isint;
        lua_Integer v = lua_tointegerx(L, -1, &isint);
        if (!isint || v < 0) luaL_error(L, "tensor: shape[%d] must be an integer >= 0", d + 1);
        shape[d] = v;
        lua_pop(L, 1);
    }
    return n;
}

static int t_zeros(lua_State *L) {
    int64_t shape[MAXDIM];
    int nd = read_shape(L, 1, shape);
    new_tensor(L, read_dtype(L, 2, TD_F32), nd, shape);
    return 1;
}

// randn(shape, seed [, std [, dtype]]): N(0, std^2) from the engine's seeded generator
static int t_randn(lua_State *L) {
    int64_t shape[MAXDIM];
    int nd = read_shape(L, 1, shape);
    uint64_t seed = (uint64_t)luaL_checkinteger(L, 2);
    double sd = luaL_optnumber(L, 3, 1.0);
    Tensor *t = new_tensor(L, read_dtype(L, 4, TD_F32), nd, shape);
    Rng r;
    rng_seed(&r, seed);
    for (int64_t i = 0; i < t->n; i++) set_d(t, i, sd * rng_normal(&r));
    return 1;
}

// rand(shape, seed [, dtype]): uniform [0, 1)
static int t_rand(lua_State *L) {
    int64_t shape[MAXDIM];
    int nd = read_shape(L, 1, shape);
    uint64_t seed = (uint64_t)luaL_checkinteger(L, 2);
    Tensor *t = new_tensor(L, read_dtype(L, 3, TD_F32), nd, shape);
    Rng r;
    rng_seed(&r, seed);
    for (int64_t i = 0; i < t->n; i++) set_d(t, i, rng_uniform(&r));
    return 1;
}

// from(values [, shape [, dtype]]): a flat list with a shape, or nested lists (shape inferred)
static void flatten(lua_State *L, int idx, Tensor *t, int64_t *at, int depth) {
    int n = (int)luaL_len(L, idx);
    for (int i = 1; i <= n; i++) {
        lua_geti(L, idx, i);
        if (lua_istable(L, -1)) {
            flatten(L, lua_gettop(L), t, at, depth + 1);
        } else {
            if (*at >= t->n) luaL_error(L, "tensor.from: more values than the shape holds");
            set_d(t, (*at)++, luaL_checknumber(L, -1));
        }
        lua_pop(L, 1);
    }
}

static int t_from(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    int64_t shape[MAXDIM];
    int nd = 0;
    int dtype = read_dtype(L, 3, TD_F32);
    if (lua_istable(L, 2)) {
        nd = read_shape(L, 2, shape);
    } else { // infer from nesting: the lengths along the first elements
        lua_pushvalue(L, 1);
        while (lua_istable(L, -1)) {
            if (nd == MAXDIM) luaL_error(L, "tensor.from: at most %d dimensions", MAXDIM);
            shape[nd++] = luaL_len(L, -1);
            lua_geti(L, -1, 1);
            lua_remove(L, -2);
        }
        lua_pop(L, 1);
    }
    Tensor *t = new_tensor(L, dtype, nd, shape);
    int64_t at = 0;
    flatten(L, 1, t, &at, 0);
    if (at != t->n) luaL_error(L, "tensor.from: %lld values for %lld elements", (long long)at,
                               (long long)t->n);
    return 1;
}

// ---- .npy ----------------------------------------------------------------------------------------

static int t_load(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    FILE *f = fopen(path, "rb");
    if (!f) return luaL_error(L, "tensor.load: cannot open %s", path);
    unsigned char pre[10];
    if (fread(pre, 1, 10, f) != 10 || memcmp(pre, "\x93NUMPY", 6)) {
        fclose(f);
        return luaL_error(L, "tensor.load: %s is not a .npy file", path);
    }
    size_t hlen = pre[8] | (size_t)pre[9] << 8;
    if (pre[6] >= 2) { // versions 2 and 3: a 4-byte header length
        unsigned char more[2];
        if (fread(more, 1, 2, f) != 2) hlen = 0;
        hlen |= (size_t)more[0] << 16 | (size_t)more[1] << 24;
    }
    char *h = ms_calloc(hlen + 1, 1);
    if (fread(h, 1, hlen, f) != hlen) {
        free(h), fclose(f);
        return luaL_error(L, "tensor.load: %s: truncated header", path);
    }
    char err[256] = "";
    int dtype = -1, nd = 0;
    int64_t shape[MAXDIM];
    const char *d = strstr(h, "'descr'"), *fo = strstr(h, "'fortran_order'"), *sh = strstr(h, "'shape'");
    if (!d || !fo || !sh) snprintf(err, sizeof err, "header without descr/fortran_order/shape");
    if (!err[0]) {
        const char *q = strchr(d + 7, '\'');
        for (int i = 0; q && i < TD_N; i++)
            if (!strncmp(q + 1, npy_descr[i], 3) && q[4] == '\'') dtype = i;
        if (q && !strncmp(q + 1, "|u2", 3)) dtype = TD_BF16;
        if (dtype < 0) snprintf(err, sizeof err, "dtype %.8s is not one of <f4 <f8 <u2 (bf16) <i4 <i8", q ? q + 1 : "?");
    }
    if (!err[0] && strstr(fo, "True") && strstr(fo, "True") < sh)
        snprintf(err, sizeof err, "Fortran order is not supported (C order only)");
    if (!err[0]) {
        const char *p = strchr(sh, '(');
        for (p = p ? p + 1 : NULL; p && *p && *p != ')';) {
            while (*p == ' ' || *p == ',') p++;
            if (*p == ')') break;
            if (nd == MAXDIM) { snprintf(err, sizeof err, "more than %d dimensions", MAXDIM); break; }
            char *e;
            shape[nd++] = strtoll(p, &e, 10);
            if (e == p) { snprintf(err, sizeof err, "bad shape"); break; }
            p = e;
        }
    }
    free(h);
    if (err[0]) {
        fclose(f);
        return luaL_error(L, "tensor.load: %s: %s", path, err);
    }
    Tensor *t = new_tensor(L, dtype, nd, shape);
    size_t got = fread(t->data, dtype_size[dtype], (size_t)t->n, f);
    fclose(f);
    if (got != (size_t)t->n)
        return luaL_error(L, "tensor.load: %s: %zu of %lld values", path, got, (long long)t->n);
    return 1;
}

static int t_save(lua_State *L) {
    Tensor *t = check_tensor(L, 1);
    const char *path = luaL_checkstring(L, 2);
    int dtype = read_dtype(L, 3, t->dtype);
    char hdr[512], shape[256] = "";
    for (int d = 0; d < t->ndim; d++)
        snprintf(shape + strlen(shape), sizeof shape - strlen(shape), "%lld,%s",
                 (long long)t->shape[d], t->ndim > 1 && d < t->ndim - 1 ? " " : "");
    if (t->ndim > 1) shape[strlen(shape) - 1] = 0; // (2, 3) but (2,)
    int n = snprintf(hdr, sizeof hdr, "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }",
                     npy_descr[dtype], shape);
    int total = 10 + n + 1, pad = (64 - total % 64) % 64; // header padded to 64 bytes, ends \n
    FILE *f = fopen(path, "wb");
    if (!f) return luaL_error(L, "tensor.save: cannot write %s", path);
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, 0, 0};
    int hl = n + pad + 1;
    pre[8] = hl & 0xff, pre[9] = hl >> 8;
    fwrite(pre, 1, 10, f);
    fwrite(hdr, 1, n, f);
    for (int i = 0; i < pad; i++) fputc(' ', f);
    fputc('\n', f);
    int ok;
    if (dtype == t->dtype) {
        ok = fwrite(t->data, dtype_size[dtype], (size_t)t->n, f) == (size_t)t->n;
    } else {
        Tensor tmp = *t;
        tmp.dtype = dtype;
        tmp.data = ms_malloc((size_t)(t->n ? t->n : 1) * dtype_size[dtype]);
        for (int64_t i = 0; i < t->n; i++) set_d(&tmp, i, get_d(t, i));
        ok = fwrite(tmp.data, dtype_size[dtype], (size_t)t->n, f) == (size_t)t->n;
        free(tmp.data);
    }
    if (fclose(f) || !ok) return luaL_error(L, "tensor.save: writing %s failed", path);
    return 0;
}

// ---- methods -------------------------------------------------------------------------------------

static int t_gc(lua_State *L) {
    Tensor *t = check_tensor(L, 1);
    free(t->data);
    t->data = NULL;
    return 0;
}

static int64_t flat_index(lua_State *L, const Tensor *t, int first) {
    int n = lua_gettop(L) - first + 1;
    if (n != t->ndim) luaL_error(L, "tensor: %d indices for %d dimensions", n, t->ndim);
    int64_t at = 0;
    for (int d = 0; d < t->ndim; d++) {
        lua_Integer i = luaL_checkinteger(L, first + d);
        if (i < 1 || i > t->shape[d])
            luaL_error(L, "tensor: index %lld of dimension %d is outside 1 .. %lld", (long long)i,
                       d + 1, (long long)t->shape[d]);
        at = at * t->shape[d] + (i - 1);
    }
    return at;
}

static void push_elem(lua_State *L, const Tensor *t, int64_t i) {
    if (t->dtype == TD_I32 || t->dtype == TD_I64) lua_pushinteger(L, (lua_Integer)get_d(t, i));
    else lua_pushnumber(L, get_d(t, i));
}

static int t_get(lua_State *L) {
    Tensor *t = check_tensor(L, 1);
    push_elem(L, t, flat_index(L, t, 2));
    return 1;
}

static int t_set(lua_State *L) {
    Tensor *t = check_tensor(L, 1);
    double v = luaL_checknumber(L, 2);
    set_d(t, flat_index(L, t, 3), v);
    return 0;
}

static int t_totable(lua_State *L) {
    Tensor *t = check_tensor(L, 1);
    lua_createtable(L, (int)t->n, 0);
    for (int64_t i = 0; i < t->n; i++) {
        push_elem(L, t, i);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

// slice(dim, from, to): indices from..to (1-based, inclusive; negative count from the end) of
// dimension dim, as a new tensor
static int t_slice(lua_State *L) {
    Tensor *t = check_tensor(L, 1);
    int dim = (int)luaL_checkinteger(L, 2);
    if (dim < 1 || dim > t->ndim) return luaL_error(L, "slice: dimension %d of %d", dim, t->ndim);
    int64_t len = t->shape[dim - 1];
    lua_Integer a = luaL_checkinteger(L, 3), b = luaL_optinteger(L, 4, len);
    if (a < 0) a += len + 1;
    if (b < 0) b += len + 1;
    if (a < 1 || b > len || a > b + 1)
        return luaL_error(L, "slice: %lld .. %lld outside 1 .. %lld", (long long)a, (long long)b,
                          (long long)len);
    int64_t shape[MAXDIM], outer = 1, inner = 1;
    memcpy(shape, t->shape, sizeof shape);
    shape[dim - 1] = b - a + 1;
    for (int d = 0; d < dim - 1; d++) outer *= t->shape[d];
    for (int d = dim; d < t->ndim; d++) inner *= t->shape[d];
    Tensor *o = new_tensor(L, t->dtype, t->ndim, shape);
    size_t es = dtype_size[t->dtype], row = (size_t)(shape[dim - 1] * inner) * es;
    for (int64_t i = 0; i < outer; i++)
        memcpy((char *)o->data + i * row,
               (const char *)t->data + ((size_t)(i * len + (a - 1)) * inner) * es, row);
    return 1;
}

static int t_reshape(lua_State *L) {
    Tensor *t = check_tensor(L, 1);
    int64_t shape[MAXDIM], n = 1;
    int nd = read_shape(L, 2, shape);
    for (int d = 0; d < nd; d++) n *= shape[d];
    if (n != t->n) return luaL_error(L, "reshape: %lld elements into %lld", (long long)t->n, (long long)n);
    Tensor *o = new_tensor(L, t->dtype, nd, shape);
    memcpy(o->data, t->data, (size_t)n * dtype_size[t->dtype]);
    return 1;
}

static int t_astype(lua_State *L) {
    Tensor *t = check_tensor(L, 1);
    Tensor *o = new_tensor(L, read_dtype(L, 2, t->dtype), t->ndim, t->shape);
    for (int64_t i = 0; i < t->n; i++) set_d(o, i, get_d(t, i));
    return 1;
}

static int t_clone(lua_State *L) {
    lua_settop(L, 1);
    return t_astype(L);
}

static int t_scale(lua_State *L) { // in place; returns the tensor
    Tensor *t = check_tensor(L, 1);
    double s = luaL_checknumber(L, 2);
    for (int64_t i = 0; i < t->n; i++) set_d(t, i, get_d(t, i) * s);
    lua_settop(L, 1);
    return 1;
}

static int t_sum(lua_State *L) {
    Tensor *t = check_tensor(L, 1);
    double s = 0;
    for (int64_t i = 0; i < t->n; i++) s += get_d(t, i);
    lua_pushnumber(L, s);
    return 1;
}

static int t_max_abs_diff(lua_State *L) {
    Tensor *a = check_tensor(L, 1), *b = check_tensor(L, 2);
    if (a->n != b->n) return luaL_error(L, "max_abs_diff: %lld vs %lld elements", (long long)a->n, (long long)b->n);
    double m = 0;
    for (int64_t i = 0; i < a->n; i++) {
        double d = fabs(get_d(a, i) - get_d(b, i));
        if (!(d <= m)) m = d; // NaN wins
    }
    lua_pushnumber(L, m);
    return 1;
}

static int t_len(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)check_tensor(L, 1)->n);
    return 1;
}

static int t_tostring(lua_State *L) {
    Tensor *t = check_tensor(L, 1);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addstring(&b, "tensor(");
    luaL_addstring(&b, dtype_names[t->dtype]);
    luaL_addstring(&b, " [");
    for (int d = 0; d < t->ndim; d++) {
        lua_pushfstring(L, "%s%I", d ? ", " : "", (lua_Integer)t->shape[d]);
        luaL_addvalue(&b);
    }
    luaL_addstring(&b, "])");
    luaL_pushresult(&b);
    return 1;
}

static const luaL_Reg tensor_methods[] = {
    {"get", t_get},       {"set", t_set},         {"totable", t_totable},
    {"slice", t_slice},   {"reshape", t_reshape}, {"astype", t_astype},
    {"clone", t_clone},   {"scale", t_scale},     {"sum", t_sum},
    {"save", t_save},     {"max_abs_diff", t_max_abs_diff}, {NULL, NULL},
};

static int t_index(lua_State *L) {
    Tensor *t = check_tensor(L, 1);
    const char *k = luaL_checkstring(L, 2);
    if (!strcmp(k, "shape")) {
        lua_createtable(L, t->ndim, 0);
        for (int d = 0; d < t->ndim; d++) lua_pushinteger(L, t->shape[d]), lua_rawseti(L, -2, d + 1);
    } else if (!strcmp(k, "dtype")) {
        lua_pushstring(L, dtype_names[t->dtype]);
    } else if (!strcmp(k, "ndim")) {
        lua_pushinteger(L, t->ndim);
    } else {
        for (const luaL_Reg *m = tensor_methods; m->name; m++)
            if (!strcmp(k, m->name)) {
                lua_pushcfunction(L, m->func);
                return 1;
            }
        lua_pushnil(L);
    }
    return 1;
}

// ---- attention objects ---------------------------------------------------------------------------

typedef struct {
    AttnConfig cfg;
    LattnExtra ex;
    int rope; // inputs are un-rotated: rotate them at positions t, as the model does
} AttnObj;

static int l_attention(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    AttnObj *a = lua_newuserdatauv(L, sizeof *a, 0);
    memset(a, 0, sizeof *a);
    luaL_setmetatable(L, ATTN_MT);
    a->ex.base = 10000.0f;
    a->ex.rope_style = ROPE_INTERLEAVED;
    // `rope` is the object's own key: read it, then hide it from the attention reader
    lua_getfield(L, 1, "rope");
    if (!lua_isnil(L, -1) && !lua_isboolean(L, -1))
        lconfig_error(L, "rope", "attention.rope: expected a boolean, got %s", luaL_typename(L, -1));
    a->rope = lua_toboolean(L, -1);
    lua_pop(L, 1);
    lua_newtable(L); // a copy without `rope`
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        if (lua_type(L, -2) == LUA_TSTRING && !strcmp(lua_tostring(L, -2), "rope")) {
            lua_pop(L, 1);
            continue;
        }
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_settable(L, -4);
    }
    lattn_read(L, lua_gettop(L), "attention", &a->cfg, NULL, NULL, NULL, 0, &a->ex);
    if (!(a->ex.base > 1.0f)) lconfig_error(L, "base", "attention.base (%g) must be > 1", a->ex.base);
    lua_pop(L, 1);
    return 1;
}

typedef struct {
    int B, T, H, KVH, D;
    float *q, *k, *v, *qr, *kr; // f32 copies; qr/kr = q/k when the object does not rotate
    float *inv_freq;
} Inputs;

static float *as_f32(const Tensor *t) {
    float *x = ms_malloc(sizeof(float) * (size_t)(t->n ? t->n : 1));
    for (int64_t i = 0; i < t->n; i++) x[i] = (float)get_d(t, i);
    return x;
}

static void inputs_free(Inputs *in) {
    if (in->qr != in->q) free(in->qr);
    if (in->kr != in->k) free(in->kr);
    free(in->q), free(in->k), free(in->v), free(in->inv_freq);
}

// q [B,T,H,D], k (and v) [B,T,KVH,D] at stack indices iq, ik, iv (iv 0: no v)
static void read_inputs(lua_State *L, const AttnObj *a, int iq, int ik, int iv, Inputs *in) {
    memset(in, 0, sizeof *in);
    Tensor *q = check_tensor(L, iq), *k = check_tensor(L, ik), *v = iv ? check_tensor(L, iv) : NULL;
    if (q->ndim != 4 || k->ndim != 4 || (v && v->ndim != 4))
        luaL_error(L, "attention: q, k, v must be [B, T, heads, head_dim]");
    in->B = (int)q->shape[0], in->T = (int)q->shape[1], in->H = (int)q->shape[2];
    in->D = (int)q->shape[3], in->KVH = (int)k->shape[2];
    if (k->shape[0] != in->B || k->shape[1] != in->T || k->shape[3] != in->D)
        luaL_error(L, "attention: k is not [B, T, kv_heads, head_dim] of q's B, T, head_dim");
    if (v && (v->shape[0] != k->shape[0] || v->shape[1] != k->shape[1] ||
              v->shape[2] != k->shape[2] || v->shape[3] != k->shape[3]))
        luaL_error(L, "attention: v must have k's shape");
    if (in->B < 1 || in->T < 1 || in->KVH < 1 || in->H % in->KVH || in->D % 2 || in->D > 512)
        luaL_error(L, "attention: B, T >= 1, kv_heads dividing heads, an even head_dim <= 512");
    in->q = as_f32(q), in->k = as_f32(k), in->v = v ? as_f32(v) : NULL;
    in->qr = in->q, in->kr = in->k;
    in->inv_freq = ms_malloc(sizeof(float) * in->D / 2);
    for (int i = 0; i < in->D / 2; i++)
        in->inv_freq[i] = (float)pow(a->ex.base, -2.0 * i / in->D);
    if (a->rope) { // as the model: positions t
        const Backend *be = backend_cpu();
        size_t N = (size_t)in->B * in->T;
        float *pos = ms_malloc(sizeof(float) * N);
        for (size_t i = 0; i < N; i++) pos[i] = (float)(i % in->T);
        in->qr = ms_malloc(sizeof(float) * q->n);
        in->kr = ms_malloc(sizeof(float) * k->n);
        be->rope_fwd(in->qr, in->q, pos, in->inv_freq, (int)N, in->H, in->D, a->ex.rope_style);
        be->rope_fwd(in->kr, in->k, pos, in->inv_freq, (int)N, in->KVH, in->D, a->ex.rope_style);
        free(pos);
    }
}

// The plan of the object at the inputs' length; mode as AttnLayer (0 dense, 1 sparse, 2 positions
// inside). Selection and attention inputs follow select_on / positions like the model.
typedef struct {
    AttnDims d;
    AttnIndex ix;
    int *mem;
    int mode;
} ObjPlan;

static void obj_plan(lua_State *L, const AttnObj *a, const Inputs *in, ObjPlan *p, int force) {
    memset(p, 0, sizeof *p);
    if (attn_dims(&a->cfg, in->T, &p->d)) luaL_error(L, "%s", ms_error());
    p->mode = p->d.reindex ? 2 : 1;
    if (!force && (a->cfg.kind == ATTN_DENSE || (p->d.dense && !p->d.reindex))) {
        p->mode = 0;
        return;
    }
    size_t n = (size_t)in->B * in->H * p->d.nblk * p->d.width, nq = (size_t)in->B * in->H * p->d.nblk;
    p->mem = ms_calloc(2 * n + nq + 1, sizeof(int));
    p->ix = (AttnIndex){p->d.qblock, p->d.nblk, p->d.region, p->d.width, p->d.window, p->mem,
                        p->d.reindex ? p->mem + n : NULL, p->d.reindex ? p->mem + 2 * n : NULL,
                        in->inv_freq, a->ex.rope_style};
    int unrot = a->cfg.kind == ATTN_MS && a->cfg.select_on == SELECT_ON_UNROTATED;
    backend_cpu()->attention_select(&p->ix, &a->cfg, unrot ? in->q : in->qr,
                                    unrot ? in->k : in->kr, in->B, in->T, in->H, in->KVH, in->D);
}

static Tensor *push_f32(lua_State *L, const float *x, int nd, int64_t a, int64_t b, int64_t c,
                        int64_t d) {
    int64_t shape[4] = {a, b, c, d};
    Tensor *t = new_tensor(L, TD_F32, nd, shape);
    memcpy(t->data, x, sizeof(float) * (size_t)t->n);
    return t;
}

// attn(q, k, v) -> out [B, T, H, D], lse [B, H, T]
static int attn_call(lua_State *L) {
    AttnObj *a = luaL_checkudata(L, 1, ATTN_MT);
    Inputs in;
    read_inputs(L, a, 2, 3, 4, &in);
    ObjPlan p;
    obj_plan(L, a, &in, &p, 0);
    size_t nq = (size_t)in.B * in.T * in.H * in.D;
    float *out = ms_malloc(sizeof(float) * nq), *lse = ms_malloc(sizeof(float) * in.B * in.H * in.T);
    const Backend *be = backend_cpu();
    if (p.mode == 0) be->attention_fwd(out, lse, in.qr, in.kr, in.v, in.B, in.T, in.H, in.KVH, in.D);
    else be->sparse_attention_fwd(out, lse, p.mode == 2 ? in.q : in.qr, p.mode == 2 ? in.k : in.kr,
                                  in.v, &p.ix, in.B, in.T, in.H, in.KVH, in.D);
    push_f32(L, out, 4, in.B, in.T, in.H, in.D);
    push_f32(L, lse, 3, in.B, in.H, in.T, 0);
    free(out), free(lse), free(p.mem);
    inputs_free(&in);
    return 2;
}

// attn:backward(q, k, v, dout) -> dq, dk, dv (of the tensors passed, i.e. of un-rotated q/k when
// the object rotates; no gradient through the selection)
static int attn_backward(lua_State *L) {
    AttnObj *a = luaL_checkudata(L, 1, ATTN_MT);
    Inputs in;
    read_inputs(L, a, 2, 3, 4, &in);
    Tensor *g = check_tensor(L, 5);
    size_t nq = (size_t)in.B * in.T * in.H * in.D, nk = (size_t)in.B * in.T * in.KVH * in.D;
    if ((size_t)g->n != nq) luaL_error(L, "attention backward: dout must have q's shape");
    float *dout = as_f32(g);
    ObjPlan p;
    obj_plan(L, a, &in, &p, 0);
    float *out = ms_malloc(sizeof(float) * nq), *lse = ms_malloc(sizeof(float) * in.B * in.H * in.T);
    float *dq = ms_calloc(nq, sizeof(float)), *dk = ms_calloc(nk, sizeof(float));
    float *dv = ms_calloc(nk, sizeof(float));
    const Backend *be = backend_cpu();
    const float *qa = p.mode == 2 ? in.q : in.qr, *ka = p.mode == 2 ? in.k : in.kr;
    if (p.mode == 0) {
        be->attention_fwd(out, lse, qa, ka, in.v, in.B, in.T, in.H, in.KVH, in.D);
        be->attention_bwd(dq, dk, dv, dout, out, lse, qa, ka, in.v, in.B, in.T, in.H, in.KVH, in.D);
    } else {
        be->sparse_attention_fwd(out, lse, qa, ka, in.v, &p.ix, in.B, in.T, in.H, in.KVH, in.D);
        be->sparse_attention_bwd(dq, dk, dv, dout, out, lse, qa, ka, in.v, &p.ix, in.B, in.T, in.H,
                                 in.KVH, in.D);
    }
    if (a->rope && p.mode != 2) { // back through the object's own RoPE
        size_t N = (size_t)in.B * in.T;
        float *pos = ms_malloc(sizeof(float) * N), *gq = ms_calloc(nq, 4), *gk = ms_calloc(nk, 4);
        for (size_t i = 0; i < N; i++) pos[i] = (float)(i % in.T);
        be->rope_bwd(gq, dq, pos, in.inv_freq, (int)N, in.H, in.D, a->ex.rope_style);
        be->rope_bwd(gk, dk, pos, in.inv_freq, (int)N, in.KVH, in.D, a->ex.rope_style);
        memcpy(dq, gq, nq * 4), memcpy(dk, gk, nk * 4);
        free(pos), free(gq), free(gk);
    }
    push_f32(L, dq, 4, in.B, in.T, in.H, in.D);
    push_f32(L, dk, 4, in.B, in.T, in.KVH, in.D);
    push_f32(L, dv, 4, in.B, in.T, in.KVH, in.D);
    free(dout), free(out), free(lse), free(dq), free(dk), free(dv), free(p.mem);
    inputs_free(&in);
    return 3;
}

static void push_info(lua_State *L, const AttnObj *a, const AttnDims *d) {
    lua_createtable(L, 0, 12);
#define F(name, val) (lua_pushinteger(L, (val)), lua_setfield(L, -2, name))
    F("qblock", d->qblock), F("region", d->region), F("width", d->width), F("window", d->window);
    F("blocks", d->nblk);
    if (a->cfg.kind == ATTN_MS) {
        F("regions", d->N), F("top", d->R), F("selected", d->S), F("merge", d->M);
        F("prefix", d->P), F("group", d->G), F("first_group", d->first);
    }
#undef F
    lua_pushboolean(L, d->dense), lua_setfield(L, -2, "dense");
}

// attn:index(q, k) -> the full index list [B, H, blocks, width] (i32, 0-based region ids, -1
// unused) and an info table (qblock, region, width, ...)
static int attn_index(lua_State *L) {
    AttnObj *a = luaL_checkudata(L, 1, ATTN_MT);
    Inputs in;
    read_inputs(L, a, 2, 3, 0, &in);
    ObjPlan p;
    obj_plan(L, a, &in, &p, 1);
    int64_t shape[4] = {in.B, in.H, p.d.nblk, p.d.width};
    Tensor *t = new_tensor(L, TD_I32, 4, shape);
    memcpy(t->data, p.ix.idx, sizeof(int) * (size_t)t->n);
    push_info(L, a, &p.d);
    free(p.mem);
    inputs_free(&in);
    return 2;
}

// attn:selection(q, k) -> the selected region ids (i32, 0-based, best first for the default
// order; -1 unused): ms [B, H, groups, S] for the groups after the dense prefix (a dense tail
// group included, with -1); moba [B, H, T, top - 1] per query row. Plus the info table.
static int attn_selection(lua_State *L) {
    AttnObj *a = luaL_checkudata(L, 1, ATTN_MT);
    if (a->cfg.kind != ATTN_MS && a->cfg.kind != ATTN_MOBA)
        return luaL_error(L, "attention kind \"%s\" selects nothing (ms and moba do)",
                          attn_kind_names[a->cfg.kind]);
    Inputs in;
    read_inputs(L, a, 2, 3, 0, &in);
    ObjPlan p;
    obj_plan(L, a, &in, &p, 1);
    const AttnDims *d = &p.d;
    int ms = a->cfg.kind == ATTN_MS;
    int C = ms ? (d->dense ? 0 : d->nblk - d->first) : in.T;
    int S = ms ? d->S : a->cfg.top - 1;
    int64_t shape[4] = {in.B, in.H, C, S};
    Tensor *t = new_tensor(L, TD_I32, 4, shape);
    int32_t *o = t->data;
    for (int64_t i = 0; i < t->n; i++) o[i] = -1;
    for (int bh = 0; bh < in.B * in.H; bh++)
        for (int c = 0; c < C; c++) {
            int blk = ms ? d->first + c : c;
            const int *l = p.ix.idx + ((size_t)bh * d->nblk + blk) * d->width;
            int lim = ms ? blk * d->M - (d->lg - 1) * d->M : c / a->cfg.block; // local start / own
            if (ms && blk == d->nblk - 1 && d->last_dense) continue;
            for (int s = 0, m = 0; s < d->width && l[s] >= 0 && m < S; s++)
                if (l[s] < lim) o[((size_t)bh * C + c) * S + m++] = l[s];
        }
    push_info(L, a, d);
    free(p.mem);
    inputs_free(&in);
    return 2;
}

static int attn_index_meta(lua_State *L) {
    AttnObj *a = luaL_checkudata(L, 1, ATTN_MT);
    const char *k = luaL_checkstring(L, 2);
    if (!strcmp(k, "kind")) lua_pushstring(L, attn_kind_names[a->cfg.kind]);
    else if (!strcmp(k, "config")) {
        char *j = attn_config_json(&a->cfg);
        lua_pushstring(L, j);
        free(j);
    } else if (!strcmp(k, "selection")) lua_pushcfunction(L, attn_selection);
    else if (!strcmp(k, "index")) lua_pushcfunction(L, attn_index);
    else if (!strcmp(k, "backward")) lua_pushcfunction(L, attn_backward);
    else lua_pushnil(L);
    return 1;
}

static int attn_tostring(lua_State *L) {
    AttnObj *a = luaL_checkudata(L, 1, ATTN_MT);
    char *j = attn_config_json(&a->cfg);
    lua_pushfstring(L, "attention(%s)", j);
    free(j);
    return 1;
}

void ltensor_open(lua_State *L) {
    luaL_newmetatable(L, TENSOR_MT);
    lua_pushcfunction(L, t_gc), lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, t_index), lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, t_len), lua_setfield(L, -2, "__len");
    lua_pushcfunction(L, t_tostring), lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
    luaL_newmetatable(L, ATTN_MT);
    lua_pushcfunction(L, attn_call), lua_setfield(L, -2, "__call");
    lua_pushcfunction(L, attn_index_meta), lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, attn_tostring), lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
    static const luaL_Reg tfuncs[] = {
        {"zeros", t_zeros}, {"randn", t_randn}, {"rand", t_rand},
        {"from", t_from},   {"load", t_load},   {NULL, NULL},
    };
    luaL_newlib(L, tfuncs);
    lua_setfield(L, -2, "tensor");
    lua_pushcfunction(L, l_attention);
    lua_setfield(L, -2, "attention");
}
