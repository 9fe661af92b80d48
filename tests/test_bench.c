// test_bench.c: `mslab bench-record` on synthetic TSVs (ratios, the rows it writes, errors naming
// file:line), `mslab plot speed-vs-length` drawing the task 'bench' rows it wrote, and the
// benchmark's MoBA-by-block plan against the peer's mask, bench/clocks.sh's summary.
#include <stdlib.h>
#include <string.h>

#include "../core/attention.h"
#include "../core/bench_record.h"
#include "../core/common.h"
#include "../core/plot.h"
#include "../core/store.h"
#include "test.h"

static double num(const char *db, const char *sql) { return strtod(test_db_value(db, sql), NULL); }

// Ours: dense 2x faster than FA2 at 4K, MS twice as fast as torch-ms at 16K, a MoBA row n/a, a
// moba-blk row at half flex-moba's speed (selection included on both sides).
static const char *ours_tsv =
    "# mslab-gpu-bench --attn: NVIDIA H200, sm_90, 132 SMs, 139.8 GiB; bf16 causal, B=1; median of 5 "
    "CUDA-event timings\n"
    "# kernel\tpass\tN\tms\ttflops\textra\n"
    "dense-bf16\tfwd\t4096\t1.5\t183.3\tpairs=1.0e9\n"
    "dense-bf16\tfwdbwd\t4096\t4.0\t240.5\tpairs=1.0e9\n"
    "\n"
    "ms-bf16\tselect\t16384\t0.25\t1.0\tselect_dots=3e6\n"
    "ms-bf16\tfwd\t16384\t2.0\t100\tpairs=3e9;density=0.7;share=0.125\n"
    "ms-bf16\tfwdbwd\t16384\t5.0\t140\tpairs=3e9;share=0.05;peak_bytes=9126805504;io_bytes=8589934592\n"
    "moba-bf16\tfwd\t16384\tn/a\tn/a\tn/a=not available (returns -1)\n"
    "moba-blk-bf16\tfwd\t16384\t3.0\t40\n"
    "moba-blk-bf16\tselect\t16384\t1.0\tn/a\n";
static const char *peers_tsv =
    "# bench/peers.py\n"
    "fa2\tfwd\t4096\t3.0\t90\treps=10\n"
    "fa2\tfwdbwd\t4096\t8.0\t120\n"
    "fa2\tfwd\t16384\t10\t400\n"
    "fa2\tfwdbwd\t16384\t30\t420\n"
    "torch-ms\tfwd\t16384\t4.0\tn/a\n"
    "torch-ms\tfwdbwd\t16384\t15.0\tn/a\tpeak_gib=12.5\n"
    "flex-moba\tselect\t16384\t0.5\tn/a\n"
    "flex-moba\tfwd\t16384\t1.0\t50\n";

static void write_pair(char *ours, char *peers, size_t n) {
    snprintf(ours, n, "%s/ours.tsv", test_tmpdir());
    snprintf(peers, n, "%s/peers.tsv", test_tmpdir());
    test_write_file(ours, ours_tsv);
    test_write_file(peers, peers_tsv);
}

TEST(bench_record_ratios_and_rows) {
    char ours[600], peers[600], db[600];
    write_pair(ours, peers, sizeof ours);
    snprintf(db, sizeof db, "%s/b.db", test_tmpdir());

    BenchTable t = {0};
    CHECK(bench_read_tsv(ours, 0, &t) == 0);
    CHECK(bench_read_tsv(peers, 1, &t) == 0);
    CHECK(t.n == 16);
    CHECK_STR(t.device, "NVIDIA H200, sm_90, 132 SMs, 139.8 GiB");
    CHECK(t.reps == 5);
    CHECK(t.r[5].ms < 0); // n/a
    CHECK_NEAR(bench_x_fa2(&t, &t.r[0]), 2.0, 1e-12);  // dense fwd 1.5 vs FA2 fwd 3.0
    CHECK_NEAR(bench_x_fa2(&t, &t.r[1]), 2.0, 1e-12);  // fwdbwd 4 vs 8
    CHECK_NEAR(bench_x_peer(&t, &t.r[1]), 2.0, 1e-12); // the peer of dense is FA2
    CHECK(isnan(bench_x_fa2(&t, &t.r[2])));            // select: no FA2 counterpart
    CHECK_NEAR(bench_x_fa2(&t, &t.r[3]), 5.0, 1e-12);  // ms fwd 2 vs FA2 fwd 10
    CHECK_NEAR(bench_x_peer(&t, &t.r[3]), 2.0, 1e-12); // vs torch-ms fwd 4
    CHECK_NEAR(bench_x_fa2(&t, &t.r[4]), 6.0, 1e-12);  // ms fwdbwd 5 vs FA2 30
    CHECK_NEAR(bench_x_peer(&t, &t.r[4]), 3.0, 1e-12); // vs torch-ms 15
    CHECK(isnan(bench_x_peer(&t, &t.r[5])));           // n/a row
    // moba vs flex-moba: ours includes the selection, so flex's select row is added: (0.5 + 1) / 3
    CHECK_NEAR(bench_x_peer(&t, &t.r[6]), 0.5, 1e-12);
    CHECK_NEAR(bench_x_peer(&t, &t.r[7]), 0.5, 1e-12); // select vs select: 0.5 / 1
    CHECK_NEAR(bench_extra(&t.r[4], "share"), 0.05, 1e-15);
    CHECK(isnan(bench_extra(&t.r[4], "shar")));
    CHECK_STR(bench_peer_of("moba-bf16"), "flex-moba");
    CHECK_STR(bench_peer_of("lm-ms-bf16"), "torch-eager-lm");
    CHECK(bench_peer_of("msx-bf16") == NULL);
    bench_table_free(&t);

    char table[600];
    snprintf(table, sizeof table, "%s/table.txt", test_tmpdir());
    FILE *out = fopen(table, "w");
    BenchRecordOpts o = {.db = db, .note = "synthetic 'note'", .out = out};
    int64_t id = 0;
    CHECK(bench_record(ours, peers, &o, &id) == 0);
    fclose(out);
    if (test_failed_checks) fprintf(stderr, "  %s\n", ms_error());
    CHECK(id == 1);
    size_t n;
    char *text = test_read_file(table, &n);
    CHECK(text && strstr(text, "x FA2") && strstr(text, "x peer"));
    CHECK(text && strstr(text, "not available (returns -1)")); // the n/a row keeps its reason
    CHECK(text && strstr(text, "select 5.0%"));
    free(text);
    CHECK_STR(test_db_value(db, "SELECT name || ' ' || status || ' ' || device FROM runs"), "bench done cuda");
    CHECK_STR(test_db_value(db, "SELECT value FROM params WHERE key = 'bench.note'"), "synthetic 'note'");
    CHECK_STR(test_db_value(db, "SELECT value FROM params WHERE key = 'bench.gpu'"),
              "NVIDIA H200, sm_90, 132 SMs, 139.8 GiB");
    // 7 measured rows of ours + 8 of the peers (the n/a row writes nothing)
    CHECK(num(db, "SELECT count(*) FROM evals WHERE task = 'bench'") == 15);
    CHECK(num(db, "SELECT value FROM evals WHERE task = 'bench' AND protocol = 'ms-bf16 fwdbwd' "
                  "AND length = 16384") == 5.0);
    CHECK(num(db, "SELECT n FROM evals WHERE task = 'bench' AND protocol = 'ms-bf16 fwdbwd'") == 5);
    CHECK(num(db, "SELECT n FROM evals WHERE task = 'bench' AND protocol = 'fa2 fwd' AND length = 4096") == 10);
    CHECK_NEAR(num(db, "SELECT value FROM evals WHERE task = 'bench_x_fa2' AND protocol = 'ms-bf16 fwdbwd'"),
               6.0, 1e-12);
    CHECK_NEAR(num(db, "SELECT value FROM evals WHERE task = 'bench_x_peer' AND protocol = 'dense-bf16 fwd'"),
               2.0, 1e-12);
    CHECK_NEAR(num(db, "SELECT value FROM evals WHERE task = 'bench_tflops' AND protocol = 'dense-bf16 fwdbwd'"),
               240.5, 1e-9);
    CHECK_NEAR(num(db, "SELECT value FROM evals WHERE task = 'bench_share' AND protocol = 'ms-bf16 fwdbwd'"),
               0.05, 1e-12);
    CHECK(num(db, "SELECT value FROM evals WHERE task = 'bench_peak_bytes'") == 9126805504.0);
    CHECK_NEAR(num(db, "SELECT value FROM evals WHERE task = 'bench_peak_gib' AND protocol = 'torch-ms fwdbwd'"),
               12.5, 1e-12);
    CHECK(num(db, "SELECT count(*) FROM evals WHERE protocol LIKE 'moba-bf16%'") == 0);
    CHECK(num(db, "SELECT count(*) FROM artifacts WHERE kind = 'bench-tsv'") == 2);

    // peers are optional: a second recording is a run of its own, no ratios without FA2
    BenchRecordOpts o2 = {.db = db, .name = "bench-ours"};
    CHECK(bench_record(ours, NULL, &o2, &id) == 0);
    CHECK(id == 2);
    CHECK(num(db, "SELECT count(*) FROM evals WHERE run_id = 2 AND task LIKE 'bench_x_%'") == 0);
    CHECK(num(db, "SELECT count(*) FROM evals WHERE run_id = 2 AND task = 'bench'") == 7);
}

TEST(bench_record_bad_lines_name_file_and_line) {
    char path[600], db[600];
    snprintf(path, sizeof path, "%s/bad.tsv", test_tmpdir());
    snprintf(db, sizeof db, "%s/bad.db", test_tmpdir());
    BenchRecordOpts o = {.db = db};
    struct {
        const char *text, *want;
    } cases[] = {
        {"# c\ndense-bf16\tfwd\t4096\t1.0\t2\n\ndense-bf16\tfwd\t8192\tfast\t2\n", "bad.tsv:4: ms \"fast\""},
        {"dense-bf16\tfwd\t4096\t1.0\n", "bad.tsv:1: expected 5 or 6 tab-separated fields"},
        {"dense-bf16 fwd 4096 1.0 2 x\n", "bad.tsv:1: expected 5 or 6"},
        {"dense-bf16\tfwd\t-3\t1.0\t2\n", "bad.tsv:1: N \"-3\""},
        {"dense-bf16\tfwd\t4096\t1.0\t2\n\ndense bf16\tfwd\t1\t1\t1\n", "bad.tsv:3: kernel \"dense bf16\""},
        {"# only comments\n", "bad.tsv: no benchmark rows"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        test_write_file(path, cases[i].text);
        CHECK(bench_record(path, NULL, &o, NULL) == -1);
        if (!strstr(ms_error(), cases[i].want)) {
            fprintf(stderr, "  case %zu: error \"%s\", want \"%s\"\n", i, ms_error(), cases[i].want);
            test_failed_checks++;
        }
    }
    CHECK(bench_record("/nonexistent/ours.tsv", NULL, &o, NULL) == -1);
    CHECK(strstr(ms_error(), "/nonexistent/ours.tsv") != NULL);
    // a bad peers file names the peers file
    char ours[600], peers[600];
    write_pair(ours, peers, sizeof ours);
    test_write_file(peers, "fa2\tfwd\t4096\t3.0\t90\nfa2\tfwdbwd\tN\t1\t1\n");
    CHECK(bench_record(ours, peers, &o, NULL) == -1);
    CHECK(strstr(ms_error(), "peers.tsv:2: N \"N\"") != NULL);
    CHECK_STR(test_db_value(db, "SELECT count(*) FROM runs"), "(no db)"); // nothing written on bad input
}

// speed-vs-length draws the newest bench run (one line per kernel + pass; peers open points; the
// LM step rows left out); with --where every matching run; without bench rows the 'speed' rows.
TEST(plot_speed_vs_length_bench_rows) {
    if (system("command -v gnuplot >/dev/null 2>&1") != 0) SKIP("gnuplot not installed");
    char ours[600], peers[600], db[600], out[600], gp[700];
    write_pair(ours, peers, sizeof ours);
    FILE *f = fopen(peers, "a");
    fprintf(f, "torch-eager-lm\ttrain\t4096\t120.5\tn/a\ttokens_per_s=270000\n");
    fprintf(f, "dense-fp32\tfwd\t4096\t6.3\t21.8\n");
    fclose(f);
    snprintf(db, sizeof db, "%s/p.db", test_tmpdir());
    snprintf(out, sizeof out, "%s/plots", test_tmpdir());
    BenchRecordOpts o = {.db = db};
    CHECK(bench_record(ours, peers, &o, NULL) == 0);
    CHECK(bench_record(ours, peers, &o, NULL) == 0);
    CHECK(plot_speed_vs_length(db, out, NULL) == 0);
    if (test_failed_checks) fprintf(stderr, "  %s\n", ms_error());
    snprintf(gp, sizeof gp, "%s/speed_vs_length.gp", out);
    size_t n;
    char *text = test_read_file(gp, &n);
    CHECK(text && strstr(text, "title 'dense-bf16 fwdbwd'"));
    CHECK(text && strstr(text, "title 'fa2 fwd'"));
    CHECK(text && strstr(text, "pt 6 lc rgb")); // a peer
    CHECK(text && strstr(text, "logscale xy"));
    CHECK(text && !strstr(text, "torch-eager-lm")); // not an attention timing
    CHECK(text && !strstr(text, "dense-fp32"));     // reference rows: in the DB, not drawn
    CHECK(text && strstr(text, "$run2_") && !strstr(text, "$run1_")); // the newest run only
    free(text);
    CHECK(plot_speed_vs_length(db, out, "r.id >= 1") == 0);
    text = test_read_file(gp, &n);
    CHECK(text && strstr(text, "$run1_") && strstr(text, "bench #1 dense-bf16 fwd"));
    free(text);
    // no bench rows: the 'speed' rows, as before
    char db2[600];
    snprintf(db2, sizeof db2, "%s/s.db", test_tmpdir());
    Store *s;
    CHECK(store_open(&s, db2, 0) == 0);
    RunInfo info = {.name = "sp"};
    int64_t id;
    CHECK(store_run_begin(s, &info, &id) == 0);
    for (int L = 128; L <= 1024; L *= 2) CHECK(store_eval(s, id, "speed", L, 1e5 / L, "forward", L) == 0);
    store_close(s);
    CHECK(plot_speed_vs_length(db2, out, NULL) == 0);
    text = test_read_file(gp, &n);
    CHECK(text && strstr(text, "tokens / s"));
    free(text);
    CHECK(plot_speed_vs_length(db2, out, "r.name = 'none'") == -1);
    CHECK(strstr(ms_error(), "bench evals (task 'bench')") != NULL);
}

// bench/attn_bench.c's moba-blk rows: the MS plan with w 128, merge 1, prefix 0, top nb/16 + 1 is
// the FlexAttention peer's MoBA mask (torch_peers_sparse.py moba_flex): each query block lists its
// own block and the top nb/16 strictly earlier ones, so the pairs equal the peer's count.
TEST(bench_moba_blk_plan_matches_peer_mask) {
    const Backend *be = backend_cpu();
    for (int T = 4096; T <= 8192; T *= 2) {
        int H = 2, D = 16, nb = T / 128, topk = nb / 16;
        AttnConfig c = attn_config_default(ATTN_MS);
        c.w = 128, c.merge = 1, c.prefix = 0, c.top = topk + 1;
        CHECK(attn_config_check(&c, "attention") == 0);
        AttnDims d;
        CHECK(attn_dims(&c, T, &d) == 0);
        CHECK(d.qblock == 128 && d.region == 128 && d.nblk == nb && d.width == topk + 1 && !d.dense);
        Rng r;
        rng_seed(&r, 7);
        size_t n = (size_t)T * H * D;
        float *q = ms_malloc(n * sizeof(float)), *k = ms_malloc(n * sizeof(float));
        for (size_t i = 0; i < n; i++) q[i] = rng_normal(&r), k[i] = rng_normal(&r);
        int *idx = ms_calloc((size_t)H * d.nblk * d.width, sizeof(int));
        AttnIndex ix = {.qblock = d.qblock, .nblk = d.nblk, .region = d.region, .width = d.width,
                        .idx = idx};
        be->attention_select(&ix, &c, q, k, 1, T, H, H, D);
        int bad = 0;
        for (int h = 0; h < H; h++)
            for (int b = 0; b < nb; b++) {
                const int *l = idx + ((size_t)h * nb + b) * d.width;
                int own = 0, earlier = 0;
                for (int s = 0; s < d.width && l[s] >= 0; s++) own += l[s] == b, earlier += l[s] < b;
                bad += own != 1 || earlier != (b < topk ? b : topk);
            }
        CHECK(bad == 0);
        AttnStats st;
        attn_count(&c, &d, idx, H, T, &st);
        double peer = 0;
        for (int i = 0; i < nb; i++) peer += (double)(i < topk ? i : topk) * 128 * 128 + 128 * 129 / 2;
        CHECK_NEAR(st.pairs, peer * H, 0.5);
        free(q), free(k), free(idx);
    }
}

// bench/clocks.sh's summary of the clocks a phase ran at: the median of the sampled SM clocks,
// their range, the share of samples with the SW power cap bit (0x4) set, the highest power.
TEST(bench_clocks_summary) {
    char csv[600], cmd[800], out[256] = "";
    snprintf(csv, sizeof csv, "%s/clocks.csv", test_tmpdir());
    test_write_file(csv, "1980, 120.5, 0x0000000000000000\n"
                         "1785, 690.1, 0x0000000000000004\n"
                         "1710, 699.4, 0x0000000000000004\n"
                         "1830, 650.0, 0x000000000000000C\n"
                         "[N/A], [N/A], [N/A]\n"
                         "1950, 300.2, 0x0000000000000001\n");
    snprintf(cmd, sizeof cmd, "sh bench/clocks.sh summary %s", csv);
    FILE *p = popen(cmd, "r");
    CHECK(p != NULL);
    if (!p) return;
    if (!fgets(out, sizeof out, p)) out[0] = 0;
    CHECK(pclose(p) == 0);
    out[strcspn(out, "\n")] = 0;
    CHECK_STR(out, "SM clock median 1830 MHz (min 1710, max 1980), power cap 60% of 5 samples, "
                   "power max 699 W");
}
