// run_eval.h: a run's evaluation after training (eval.ppl and eval.passkey; docs/eval.md).
#ifndef MSLAB_RUN_EVAL_H
#define MSLAB_RUN_EVAL_H

#include "progress.h"
#include "run.h"

// Defaults of the eval.passkey keys (called by run_config_default).
void run_eval_defaults(RunConfig *rc);
// Checks of the eval.* keys; messages name the key.
int run_eval_check(const RunConfig *rc);
// The "eval" object of the config JSON (malloc'd). Byte for byte the earlier text when only
// eval.ppl.lengths / max_tokens / protocol are set, so those configs keep their hashes.
char *run_eval_json(const RunConfig *rc);

// After training (positions at `step`, the model in eval mode): for each eval.ppl length, each
// protocol -> an evals row ('ppl', L, ppl, protocol, scored tokens); then for each eval.passkey
// length, `trials` trials -> passkey_trials rows and an evals row ('passkey', L, accuracy,
// 'landmark', trials). res gets the first protocol's ppl per length. 0, or -1 with ms_error().
int run_eval_after_training(const RunConfig *rc, const Corpus *corpus, Model *m, Store *store,
                            int64_t run_id, int step, RunResult *res, Progress *prog);

// The seed of passkey trial `trial` at `length` (stored with the trial; passkey_make with it
// rebuilds the same prompt).
uint64_t run_passkey_seed(uint64_t seed, int length, int trial);

#endif
