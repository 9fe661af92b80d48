#!/usr/bin/env python3
"""big_db.py: a results.db of N runs (default 10,000) with 100 eval rows each (20 lengths x 5
protocols, task 'ppl'), 20 params and 50 train.loss metrics per run, for timing `mslab runs` and
the ppl_by_length view (docs/results-db.md). The schema comes from mslab itself:

    python3 bench/big_db.py /tmp/big.db [N]
    time ./mslab runs --db /tmp/big.db > /dev/null
    time ./mslab query --db /tmp/big.db "SELECT * FROM ppl_by_length" --csv > /dev/null
"""
import os, random, sqlite3, subprocess, sys, tempfile, time

path = sys.argv[1] if len(sys.argv) > 1 else "/tmp/big.db"
n = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
exe = os.environ.get("MSLAB", "./mslab")
for suffix in ("", "-wal", "-shm"):
    if os.path.exists(path + suffix):
        os.remove(path + suffix)
with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
    f.write("-- creates the schema only\n")
subprocess.run([exe, "run", f.name, "--db", path], check=True)  # store_open creates the schema
os.remove(f.name)

rng = random.Random(1)
db = sqlite3.connect(path)
db.execute("PRAGMA synchronous = OFF")
t0, now = time.time(), time.time()
kinds = ["rope", "pi", "ntk", "yarn", "crd-ntk"]
attn = ["dense", "ms", "moba", "s2", "window"]
lengths = [128 * (k + 1) for k in range(20)]
protocols = ["windows", "sliding", "first", "last", "random"]
with db:
    for i in range(1, n + 1):
        db.execute("INSERT INTO runs(id, uid, name, config_json, config_hash, status, started_at,"
                   " finished_at, heartbeat_at) VALUES (?, ?, ?, '{}', ?, 'done', ?, ?, ?)",
                   (i, "%032x" % rng.getrandbits(128), "run-%d" % i, "%016x" % rng.getrandbits(64),
                    now - 3600, now - 60, now - 60))
        p = {"seed": i % 7, "params": 770000, "model.dim": 128, "model.layers": 4, "model.heads": 4,
             "positions.kind": kinds[i % 5], "attention.kind": attn[i // 5 % 5], "train.seq": 128,
             "train.batch": 16, "train.steps": 1200, "train.lr": 1e-3 * (1 + i % 4)}
        for k in range(9):
            p["extra.k%d" % k] = k
        db.executemany("INSERT INTO params(run_id, key, value) VALUES (?, ?, ?)",
                       [(i, k, str(v)) for k, v in p.items()])
        db.executemany("INSERT INTO metrics(run_id, step, name, value, wall_s) VALUES (?, ?, 'train.loss', ?, ?)",
                       [(i, s * 25, 5.0 / (1 + s), s * 0.5) for s in range(50)])
        db.executemany("INSERT INTO evals(run_id, task, length, value, protocol, n) VALUES (?, 'ppl', ?, ?, ?, 4096)",
                       [(i, L, 10 + rng.random(), pr) for L in lengths for pr in protocols])
db.close()
print("wrote %s: %d runs, %d eval rows (%.1fs)" % (path, n, n * 100, time.time() - t0))
