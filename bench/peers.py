#!/usr/bin/env python3
# peers.py: runs the PyTorch peer scripts on this GPU and writes their numbers as a TSV in the
# format of `mslab-gpu-bench --attn --tsv` (kernel, pass, N, ms, tflops, extra), for
# `mslab bench-record OURS.tsv PEERS.tsv` (docs/bench.md).
#
#   python3 bench/peers.py [DIR] [--out peers.tsv] [--log-dir DIR] [--only dense,moba,ms]
#
# DIR holds torch_peers_dense.py and torch_peers_sparse.py (default: peers/ in the repository; the
# lead copies them there from ../shared/bench/, they are not part of the repository). Each script
# prints lines and a final `JSON {...}` line; its output is echoed and kept in LOG_DIR.
# Rows: fa2 fwd/fwdbwd (SDPA flash, dense script), flex-moba select/fwd/fwdbwd, torch-ms
# fwd/fwdbwd (selection inside; peak_gib), torch-eager-lm train (ms per step, tokens_per_s).
# A script that fails or is missing leaves its rows out and is reported; exit status 1 then.
import json, os, re, subprocess, sys, threading, time

H, D = 32, 128


def dense_flops(N):  # the peers' convention: 4 N^2 D H / 2 (causal)
    return 4.0 * N * N * D * H / 2


def moba_pairs(N, B=128, frac=16):
    # torch_peers_sparse.moba_flex: query block i sees min(i, topk) earlier blocks whole + its own
    # block causally (flex computes every listed block)
    nb = N // B
    topk = max(1, nb // frac)
    return H * sum(min(i, topk) * B * B + B * (B + 1) // 2 for i in range(nb))


def ms_pairs(N, w=16, R=512, M=128):
    # torch_peers_sparse.ms_attention: dense causal prefix of P = R w tokens, then per group of
    # G = M w queries all S w selected keys plus the group's own G keys causally
    S, P, G = R - M, R * w, M * w
    C = (N - P) // G
    return H * (P * (P + 1) // 2 + C * (G * S * w + G * (G + 1) // 2))


def run(script, args, log_dir, tag, timeout):
    cmd = [sys.executable, "-u", script] + args
    print(f"peers: {' '.join(cmd)}", flush=True)
    lines, t0 = [], time.time()
    log = open(os.path.join(log_dir, f"peers_{tag}.log"), "w") if log_dir else None
    try:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        timer = threading.Timer(timeout, p.kill)  # a hung script must not hold the GPU round
        timer.start()
        for line in p.stdout:
            lines.append(line.rstrip("\n"))
            print(f"  [{tag}] {line}", end="", flush=True)
            if log: log.write(line); log.flush()
        rc = p.wait()
        timer.cancel()
        if rc < 0: print(f"peers: {tag}: killed (signal {-rc}; --timeout {timeout} s)", flush=True)
    finally:
        if log: log.close()
    js = None
    for line in lines:
        if line.startswith("JSON "):
            try:
                js = json.loads(line[5:])
            except ValueError as e:
                print(f"peers: {tag}: bad JSON line: {e}", flush=True)
    if rc != 0 or js is None:
        print(f"peers: {tag}: exit {rc}, {'no' if js is None else 'a'} JSON line "
              f"({time.time() - t0:.0f} s)", flush=True)
    return js, lines


def from_lines(lines, tag):
    # The JSON line comes last: a script killed or crashed at its last length loses it. Its
    # progress lines carry the same timings (fewer digits); rebuild the dict from them.
    res = {}
    for line in lines:
        m = re.search(r"dense-flash N=(\d+): fwd ([\d.]+) ms .* fwd\+bwd ([\d.]+) ms", line)
        if m:
            res[f"dense_fwd_{m.group(1)}"] = float(m.group(2)); res[f"dense_fwdbwd_{m.group(1)}"] = float(m.group(3))
        m = re.search(r"N=(\d+): dense FA2 fwd ([\d.]+) fwd\+bwd ([\d.]+) ms \| (.*)", line)
        if m:
            N, rest = m.group(1), m.group(4)
            res[f"dense_{N}"] = (float(m.group(2)), float(m.group(3)))
            a = re.search(r"select ([\d.]+) fwd ([\d.]+) fwd\+bwd ([\d.]+) ms", rest)
            if a: res[f"moba_{N}"] = tuple(float(x) for x in a.groups())
            b = re.search(r"ms-torch.*: fwd ([\d.]+) fwd\+bwd ([\d.]+) ms .*peak ([\d.]+) GiB", rest)
            if b: res[f"ms_{N}"] = tuple(float(x) for x in b.groups())
    if res: print(f"peers: {tag}: no JSON line; {len(res)} values from the progress lines", flush=True)
    return res or None


def fmt(x):
    return "n/a" if x is None or not x > 0 else f"{x:.4f}"


def main():
    args = sys.argv[1:]
    d, out, log_dir, only, timeout = None, "peers.tsv", None, "dense,moba,ms", 1800
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("--out", "--log-dir", "--only", "--timeout") and i + 1 < len(args):
            v = args[i + 1]
            if a == "--out": out = v
            elif a == "--log-dir": log_dir = v
            elif a == "--only": only = v
            else: timeout = float(v)
            i += 2
            continue
        if a.startswith("-"):
            sys.exit(f"peers.py: unknown option {a}\nusage: peers.py [DIR] [--out F] [--log-dir D] [--only dense,moba,ms]")
        d = a
        i += 1
    if d is None:
        d = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "peers")
    dense_py, sparse_py = (os.path.join(d, f) for f in ("torch_peers_dense.py", "torch_peers_sparse.py"))
    if log_dir: os.makedirs(log_dir, exist_ok=True)
    try:
        import torch  # noqa: F401  (the scripts need it; say so once, clearly)
    except ImportError:
        print("peers: python3 has no torch: no peer rows", flush=True)
        sys.exit(3)
    rows, fa2, failed, device = [], {}, 0, ""

    def row(kernel, pas, N, ms, tflops=None, extra=""):
        rows.append((kernel, pas, N, ms, tflops, extra))

    if "dense" in only:
        if not os.path.exists(dense_py):
            print(f"peers: {dense_py} missing", flush=True); failed = 1
        else:
            js, lines = run(dense_py, [], log_dir, "dense", timeout)
            failed |= js is None
            js = js or from_lines(lines, "dense")
            device = next((l for l in lines if l.startswith("torch ")), "")
            for k, v in (js or {}).items():
                m = re.fullmatch(r"dense_(fwd|fwdbwd)_(\d+)", k)
                if m:
                    N = int(m.group(2)); fl = dense_flops(N) * (3.5 if m.group(1) == "fwdbwd" else 1)
                    fa2[(m.group(1), N)] = v
                    row("fa2", m.group(1), N, v, fl / (v * 1e-3) / 1e12 if v else None,
                        f"reps={10 if m.group(1) == 'fwd' else 5};script=dense")
            # LM lines: "torch-eager LM d=768 L=12 T=4096 B=8 params=...M: step 123.4 ms, 265,000 tok/s, peak mem 9.1 GiB"
            for line in lines:
                m = re.search(r"torch-eager LM d=(\d+) L=(\d+) T=(\d+) B=(\d+) params=(\d+)M: step ([\d.]+) ms, "
                              r"([\d,]+) tok/s, peak mem ([\d.]+) GiB", line)
                if m:
                    T, Bsz = int(m.group(3)), int(m.group(4))
                    row("torch-eager-lm", "train", T, float(m.group(6)), None,
                        f"tokens_per_s={m.group(7).replace(',', '')};batch={Bsz};dim={m.group(1)};"
                        f"layers={m.group(2)};params_m={m.group(5)};peak_gib={m.group(8)};reps=10")

    for mode in ("moba", "ms"):
        if mode not in only: continue
        if not os.path.exists(sparse_py):
            print(f"peers: {sparse_py} missing", flush=True); failed = 1; continue
        js, lines = run(sparse_py, [mode], log_dir, mode, timeout)
        failed |= js is None
        js = js or from_lines(lines, mode)
        for k, v in (js or {}).items():
            m = re.fullmatch(r"(dense|moba|ms)_(\d+)", k)
            if not m: continue
            N = int(m.group(2))
            if m.group(1) == "dense":  # FA2 again, inside this script: used where the dense script has none
                for pas, t in zip(("fwd", "fwdbwd"), v):
                    if (pas, N) not in fa2:
                        fa2[(pas, N)] = t
                        fl = dense_flops(N) * (3.5 if pas == "fwdbwd" else 1)
                        row("fa2", pas, N, t, fl / (t * 1e-3) / 1e12, f"reps=5;script=sparse-{mode}")
                continue
            dfb = (js.get(f"dense_{N}") or [None, None])[1]
            same = f";fa2_fwdbwd_same_script={dfb:.4f}" if dfb else ""
            if m.group(1) == "moba":
                sel, f, fb = v
                fl = 4.0 * D * moba_pairs(N)
                row("flex-moba", "select", N, sel, None, "reps=5")
                row("flex-moba", "fwd", N, f, fl / (f * 1e-3) / 1e12, f"pairs={moba_pairs(N)};reps=5")
                row("flex-moba", "fwdbwd", N, fb, 3.5 * fl / (fb * 1e-3) / 1e12,
                    f"pairs={moba_pairs(N)};reps=5{same}")
            else:
                f, fb, gib = v
                fl = 4.0 * D * ms_pairs(N)
                row("torch-ms", "fwd", N, f, fl / (f * 1e-3) / 1e12, f"pairs={ms_pairs(N)};reps=5")
                row("torch-ms", "fwdbwd", N, fb, 3.5 * fl / (fb * 1e-3) / 1e12,
                    f"pairs={ms_pairs(N)};peak_gib={gib:.3f};reps=5{same}")

    with open(out, "w") as f:
        f.write("# bench/peers.py: PyTorch peers on this GPU (torch_peers_dense.py, torch_peers_sparse.py)\n")
        if device: f.write(f"# {device}\n")
        f.write("# kernel\tpass\tN\tms\ttflops\textra\n")
        for k, p, N, ms, tf, ex in rows:
            f.write(f"{k}\t{p}\t{N}\t{fmt(ms)}\t{fmt(tf) if tf else 'n/a'}\t{ex}\n")
    print(f"peers: {len(rows)} rows -> {out}", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
