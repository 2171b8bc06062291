"""How much a per-class FID rises only because a class has fewer samples, measured on real images:
    python docs/results/split_fmnist_gd_joint_gap/bias.py [--draws 5] [--dump FILE.json]
For every Fashion-MNIST class, n of its training images (32x32, as the evaluator sees them; n from the counts a
class has in 1,000 samples: about 500 after task 0, 250 after task 1, ..., 100 after task 4) against the
class's test images, with the evaluator that scores the runs (the cached one; its SHA is printed). Per n, the
mean over `--draws` random subsets. A class's samples shrink from about 1000 / (2 (k + 1)) after the task k that
brought it to about 100 after the 5th task, so part of a class's "drift" in gap.py is this bias; joint's classes
shrink the same way, which is why gap.py compares GD's drift with joint's."""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

from cldiff.data import DATASETS, ContinualData
from cldiff.evaluate import feature_stats, frechet_distance, get_evaluator, real_stats

NS = (100, 125, 167, 250, 500, 1000)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--dump", type=Path)
    args = ap.parse_args(argv)
    ev = get_evaluator("fashion_mnist")
    names = DATASETS["fashion_mnist"].class_names
    data = ContinualData("fashion_mnist", [tuple(range(10))], image_size=32)
    rng = np.random.default_rng(0)
    out = {"evaluator_sha256": ev.sha256[:16], "n": list(NS), "draws": args.draws, "classes": {}}
    print(f"evaluator {ev.sha256[:16]}; per-class FID of n real training images against the class's test images, "
          f"mean over {args.draws} draws\n")
    print("| class | " + " | ".join(f"n = {n}" for n in NS) + " | n = 100 / n = 500 |")
    print("|---|" + "---|" * (len(NS) + 1))
    for c in range(10):
        x, _ = data.train([c])
        feats, _ = ev.run(x)
        mu, sig, _ = real_stats(ev, "fashion_mnist", "test", [c])
        fids = [float(np.mean([frechet_distance(*feature_stats(feats[rng.choice(len(feats), n, replace=False)]),
                                                mu, sig) for _ in range(args.draws)])) for n in NS]
        out["classes"][names[c]] = fids
        print(f"| {names[c]} | " + " | ".join(f"{v:.1f}" for v in fids) + f" | {fids[0] / fids[NS.index(500)]:.2f} |")
    if args.dump:
        args.dump.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
