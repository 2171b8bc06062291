"""FID and predicted-class agreement of two (or more) evaluator networks on the same image sets.

    python docs/results/evaluator_portability/compare.py EVALUATOR_A.pt EVALUATOR_B.pt [...]

The sets stand in for what runs produce: real test images against real train images (a perfect model), test
images blurred or with Gaussian noise added at several strengths (weak models), and one class pair against all
classes (a collapsed class mix). Every FID is against the test images of all ten classes, as a run's last
evaluation is; 1,000 images per set, like the `cpu` presets' evaluation.
"""
import sys

import numpy as np
import torch
import torch.nn.functional as F

from cldiff.data import ContinualData
from cldiff.evaluate import feature_stats, frechet_distance, kld, class_histogram, load_evaluator


def sets(n=1000, seed=0):
    data = ContinualData("fashion_mnist", [tuple(range(10))], None, image_size=32)
    xtr, _ = data.train(list(range(10)))
    xte, yte = data.test(list(range(10)))
    g = torch.Generator().manual_seed(seed)
    tr = xtr[torch.randperm(len(xtr), generator=g)[:n]]
    te = xte[torch.randperm(len(xte), generator=g)[:n]]
    out = {"train images": tr}
    for s in (0.1, 0.3, 0.6):
        out[f"test + noise {s}"] = (te + s * torch.randn(te.shape, generator=g)).clamp(-1, 1)
    for k in (3, 5):
        out[f"test, box blur {k}"] = F.avg_pool2d(te, k, stride=1, padding=k // 2, count_include_pad=False)
    two = xte[(yte == 2) | (yte == 6)][:n]
    out["test, classes 2 and 6 only"] = two
    out["test, classes 2 and 6, noise 0.3"] = (two + 0.3 * torch.randn(two.shape, generator=g)).clamp(-1, 1)
    return out, xte, yte


def main(paths):
    evs = [load_evaluator(p) for p in paths]
    imgs, xte, yte = sets()
    p_true = class_histogram(yte.numpy(), 10)
    print("| image set | " + " | ".join(f"{e.sha256[:8]} FID / KLD" for e in evs) + " | max/min FID |")
    print("|---|" + "---|" * (len(evs) + 1))
    test_stats = [feature_stats(e.run(xte)[0]) for e in evs]  # the reference set's statistics, once per evaluator
    agree = []
    for name, x in imgs.items():
        cells, fids, preds = [], [], []
        for e, st in zip(evs, test_stats):
            fg, pg = e.run(x)
            fid = frechet_distance(*feature_stats(fg), *st)
            fids.append(fid)
            preds.append(pg)
            cells.append(f"{fid:.1f} / {kld(p_true, class_histogram(pg, 10)):.3f}")
        agree.append((preds[0] == preds[-1]).mean())
        print(f"| {name} | " + " | ".join(cells) + f" | {max(fids) / min(fids):.3f} |")
    print(f"\npredicted class: first and last evaluator agree on {np.mean(agree):.3f} of the images (mean over sets)")
    for e in evs:
        print(f"{e.sha256[:16]}: test accuracy {e.meta.get('test_accuracy')}")


if __name__ == "__main__":
    torch.set_num_threads(2)
    main(sys.argv[1:])
