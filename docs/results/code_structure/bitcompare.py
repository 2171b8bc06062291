import json, sys, pathlib, torch
# --new-keys-ok: lines of B may carry keys that A's lack (metrics added since A); every key of A must match
a, b = map(pathlib.Path, sys.argv[1:3])
NEW_OK = "--new-keys-ok" in sys.argv[3:]
TIMING = {"wall_s", "img_per_s", "student_img_per_s", "train_s", "eval_s", "peak_rss_mib", "lr", "from", "time_s",
          "classifier_s", "generate_s", "config_digest", "replay_gen_s", "train_s"}
bad = 0
for run in sorted(p.name for p in a.iterdir() if p.is_dir()):
    la = [{k: v for k, v in json.loads(l).items() if k not in TIMING} for l in (a / run / "metrics.jsonl").read_text().splitlines()]
    lb = [{k: v for k, v in json.loads(l).items() if k not in TIMING} for l in (b / run / "metrics.jsonl").read_text().splitlines()]
    if NEW_OK:
        new = sorted({k for x, y in zip(la, lb) for k in y if k not in x})
        if new:
            print(f"  {run}: keys only in B (left out): {', '.join(new)}")
        lb = [{k: v for k, v in y.items() if k in x} for x, y in zip(la, lb)] + lb[len(la):]
    same_lines = la == lb
    for x, y in zip(la, lb):
        if x != y:
            print("  differs:", run, {k: (x.get(k), y.get(k)) for k in set(x) | set(y) if x.get(k) != y.get(k)}); break
    ca = sorted((a / run / "checkpoints").glob("*.pt")); cb = sorted((b / run / "checkpoints").glob("*.pt"))
    same_ck = [p.name for p in ca] == [p.name for p in cb]
    n = 0
    for pa, pb in zip(ca, cb):
        sa, sb = torch.load(pa, weights_only=False), torch.load(pb, weights_only=False)
        for part in ("model", "optimizer"):
            fa = sa[part] if part == "model" else {}
            for k, v in fa.items():
                n += 1
                same_ck &= torch.equal(v, sb[part][k])
        for k, v in sa.get("strategy", {}).get("teacher", {}).items():
            same_ck &= torch.equal(v, sb["strategy"]["teacher"][k]); n += 1
    print(f"{run}: metrics lines {len(la)} {'identical' if same_lines else 'DIFFER'}; checkpoint tensors {n} {'identical' if same_ck else 'DIFFER'}")
    bad += (not same_lines) + (not same_ck)
sys.exit(1 if bad else 0)
