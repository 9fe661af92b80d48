// Training on real text: the eval loss falls well below the unigram entropy within a fixed budget,
// and the same seed gives a bitwise-identical loss curve.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../core/common.h"
#include "../core/data.h"
#include "../core/run.h"
#include "../core/store.h"
#include "test.h"

static int collect_cb(int n, const char *const *names, const char *const *vals, void *ctx) {
    (void)n, (void)names;
    char *buf = ctx;
    strncat(buf, vals[0] ? vals[0] : "NULL", 8191 - strlen(buf));
    strncat(buf, ",", 8191 - strlen(buf));
    return 0;
}

static double train_once(const Corpus *c, const char *db, char *curve) {
    RunConfig rc;
    run_config_default(&rc);
    rc.name = "learns";
    rc.script = "tests/test_train.c";
    rc.model.dim = 64, rc.model.layers = 2, rc.model.heads = 4, rc.model.kv_heads = 2;
    rc.model.ffn = 176, rc.model.vocab = 256, rc.model.seq_len = 64;
    rc.seq = 64, rc.batch = 16;
    rc.optim.steps = 250, rc.optim.warmup = 20, rc.optim.lr = 5e-3f, rc.optim.lr_min = 5e-4f;
    rc.log_every = 5;
    rc.eval_batches = 4;
    rc.checkpoint_dir = test_tmpdir();
    rc.config_json = "{}", rc.config_hash = "0";
    Store *s;
    CHECK(store_open(&s, db, 0) == 0);
    RunResult res;
    CHECK(run_execute(&rc, c, s, &res) == 0);
    CHECK_STR(res.status, "done");
    curve[0] = 0;
    CHECK(store_select(s, "SELECT quote(value) FROM metrics WHERE name = 'train.loss' ORDER BY step",
                       collect_cb, curve) == 0);
    store_close(s);
    return res.eval_loss;
}

TEST(training_beats_unigram_and_is_deterministic) {
    const char *path = test_shared_path("data/books/extra/tinyshakespeare.txt");
    if (!path) SKIP("../shared/data/books/extra/tinyshakespeare.txt not present");
    const char *paths[] = {path};
    CorpusSpec spec = {.paths = paths, .n_paths = 1, .tokenizer = "byte", .eval_frac = 0.1,
                       .cache_dir = test_tmpdir()};
    Corpus c;
    CHECK(corpus_open(&c, &spec) == 0);
    // unigram entropy of the eval bytes (nats): what a model that ignores context achieves
    double counts[256] = {0}, H = 0;
    for (size_t i = 0; i < c.n_eval; i++) counts[c.eval[i]]++;
    for (int i = 0; i < 256; i++)
        if (counts[i] > 0) H -= counts[i] / c.n_eval * log(counts[i] / c.n_eval);
    char db[512], curve1[8192], curve2[8192];
    snprintf(db, sizeof db, "%s/a.db", test_tmpdir());
    double loss1 = train_once(&c, db, curve1);
    snprintf(db, sizeof db, "%s/b.db", test_tmpdir());
    double loss2 = train_once(&c, db, curve2);
    fprintf(stderr, "    unigram entropy %.3f nats, eval loss after 250 steps %.3f\n", H, loss1);
    CHECK(loss1 < H - 0.5);
    CHECK(strlen(curve1) > 100);
    CHECK_STR(curve1, curve2); // quote(REAL) prints all 17 digits: bitwise equality
    CHECK(loss1 == loss2);
    corpus_close(&c);
}
