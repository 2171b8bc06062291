"""The classifier (docs/protocol.md §5) with GD replay of lambda 0.75 against lambda 1, one seed at a time:
    python docs/results/split_fmnist_cpu_lambda/classifier_table.py runs/sweeps/split_fmnist_cpu 69 1714 [--dump FILE]
    python docs/results/split_fmnist_cpu_lambda/classifier_table.py docs/results/split_fmnist_cpu_lambda/classifier_amx.json
The first form reads the GD run folders' classifier.jsonl (`cldiff classify RUN --set classifier.epochs=5
--set classifier.replay_pool=2000 --threads 1`); --dump writes their records to FILE (the committed
classifier_amx.json); the second form reads such a file. Rows: the average accuracy over the tasks seen after
each task, and the accuracy on every task after the last."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # docs/results: the shared snapshot helper
from snapshot import classifier_cells, classifier_records, read_source  # noqa: E402

PATTERN = "fashion_mnist_generative_distillation_lam{lam}_teacher_steps2_small_seed{seed}"
LAMBDAS = ("0.75", "1.0")


def collect(root: Path, seeds: list[str]) -> dict:
    """The classifier_eval records of every GD run folder of the seeds, by folder name."""
    data = {}
    for seed in seeds:
        for lam in LAMBDAS:
            run = root / PATTERN.format(lam=lam, seed=seed)
            if (run / "classifier.jsonl").is_file():
                data[run.name] = classifier_records(run)
    return data


def main(argv: list[str]) -> int:
    data = read_source(__doc__, collect, argv, "the sweep folder")
    seeds = sorted({int(name.rsplit("seed", 1)[1]) for name in data})
    n = max((len(v) for v in data.values()), default=0)
    print("| seed | lambda | " + " | ".join(f"after task {k}" for k in range(n)) + " | per task after the last |")
    print("|---|---|" + "---|" * n + "---|")
    finals: dict[str, list[float]] = {}
    for seed in seeds:
        for lam in LAMBDAS:
            recs = data.get(PATTERN.format(lam=lam, seed=seed))
            if not recs:
                continue
            cells, per_task, final = classifier_cells(recs, n)
            if final is not None:
                finals.setdefault(lam, []).append(final)
            print(f"| {seed} | {float(lam):g} | " + " | ".join(cells) + f" | {per_task} |")
    for lam, v in finals.items():
        print(f"\nlambda {float(lam):g}: mean final average accuracy {sum(v) / len(v):.3f} over {len(v)} seeds")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
