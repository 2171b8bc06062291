import json
import math

import pytest
import yaml
from PIL import Image

from cldiff.config import Config
from cldiff.report import make_report, mean_sem


def _fake_run(folder, seed, strategy, fids, klds, num_tasks=None):
    folder.mkdir(parents=True)
    cfg = Config(seed=seed, strategy={"name": strategy}).to_dict()
    cfg["data"]["num_tasks"] = num_tasks or len(fids)
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    lines = [{"event": "start", "task": -1}]
    for k, (f, q) in enumerate(zip(fids, klds)):
        lines.append({"event": "task_end", "task": k, "images_trained": 100, "teacher_image_forwards": 300 * k,
                      "wall_s": 10.0 * (k + 1)})
        lines.append({"event": "eval", "task": k, "fid_fmnist": f, "kld": q, "ard": q / 2,
                      "hist_pred": [0.1] * 10, "hist_true": [0.1] * 10})
        lines.append({"event": "classifier_eval", "task": k, "acc": [0.9] * (k + 1), "avg_acc": 0.9 - 0.1 * k,
                      "forgetting": None if k == 0 else 0.1 * seed / 42})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (folder / "samples").mkdir()
    return folder


def test_report_mean_and_sem(tmp_path):
    runs = [_fake_run(tmp_path / "gd1", 42, "generative_distillation", [10, 20], [0.1, 0.2]),
            _fake_run(tmp_path / "gd2", 69, "generative_distillation", [10, 30], [0.1, 0.4]),
            _fake_run(tmp_path / "gr1", 42, "generative_replay", [10, 100], [0.1, 3.0])]
    out = make_report(runs, tmp_path / "rep")
    res = json.loads((out / "results.json").read_text())
    gd = next(g for g in res if g["strategy"] == "generative_distillation")
    assert gd["seeds"] == [42, 69]
    m, s = gd["final"]["fid_fmnist"]
    assert m == pytest.approx(25.0) and s == pytest.approx(5.0)  # std(20, 30) = 7.07; / sqrt(2) = 5
    assert gd["final"]["kld"][0] == pytest.approx(0.3)
    gr = next(g for g in res if g["strategy"] == "generative_replay")
    assert gr["final"]["fid_fmnist"] == [100.0, None]  # one seed: no SEM
    md = (out / "report.md").read_text()
    assert "25.00 ± 5.00" in md and "100.00" in md and "not* Inception FID" in md
    assert (out / "fid_per_task.png").stat().st_size > 1000 and (out / "class_histograms.png").exists()
    assert (out / "classifier_accuracy.png").exists()
    assert gd["classifier"]["avg_acc"][0] == pytest.approx(0.8)
    assert gd["classifier"]["forgetting"][0] == pytest.approx((0.1 + 0.1 * 69 / 42) / 2)
    assert "0.90 0.90" in md  # the accuracy matrix
    csv = (out / "results.csv").read_text().splitlines()
    assert len(csv) == 3 and csv[0].startswith("strategy,seeds,fid_fmnist_mean")



def test_classifier_of_a_seed_still_behind_is_not_averaged_with_another_seeds_later_task(tmp_path):
    a = _fake_run(tmp_path / "gd1", 42, "generative_distillation", [10, 20, 30], [0.1, 0.2, 0.3])
    b = _fake_run(tmp_path / "gd2", 69, "generative_distillation", [10, 20, 30], [0.1, 0.2, 0.3])
    c = _fake_run(tmp_path / "gd3", 1714, "generative_distillation", [10, 20, 30], [0.1, 0.2, 0.3])
    # seed 69's classifier has finished only its first task; seed 1714 has none yet
    for run, keep in ((b, 1), (c, 0)):
        recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        recs = [r for r in recs if r["event"] != "classifier_eval" or r["task"] < keep]
        (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in recs))
    out = make_report([a, b, c], tmp_path / "rep")
    gd = json.loads((out / "results.json").read_text())[0]["classifier"]
    assert gd["after_task"] == 3 and gd["seeds"] == [42]
    assert gd["avg_acc"][0] == pytest.approx(0.7)  # seed 42 after task 3 alone, not mixed with 69's 0.9
    assert gd["behind"] == {"69": 1, "1714": 0}
    assert gd["per_task"]["0"][0] == pytest.approx(0.9) and gd["per_task"]["2"][0] == pytest.approx(0.7)
    md = (out / "report.md").read_text()
    assert "| 3 | 42; seed 69 after 1; seed 1714 after 0 | 0.700 |" in md

def test_mean_sem():
    assert mean_sem([1, 2, 3]) == (2.0, pytest.approx(1 / math.sqrt(3)))
    assert mean_sem([]) == (None, None)


def test_groups_of_one_strategy_with_other_budgets_get_labels_that_tell_them_apart(tmp_path):
    a = _fake_run(tmp_path / "j280", 42, "joint", [10, 20], [0.1, 0.2])
    b = _fake_run(tmp_path / "j600", 42, "joint", [10, 15], [0.1, 0.1])
    cfg = yaml.safe_load((b / "config.yaml").read_text())
    cfg["train"]["steps_per_task"] = 600
    (b / "config.yaml").write_text(yaml.safe_dump(cfg))
    gd = _fake_run(tmp_path / "gd", 42, "generative_distillation", [10, 20], [0.1, 0.2])
    res = json.loads((make_report([a, b, gd], tmp_path / "rep") / "results.json").read_text())
    labels = sorted(g["label"] for g in res if g["strategy"] == "joint")
    assert labels == sorted(["joint [train.steps_per_task=600]",
                             f"joint [train.steps_per_task={Config().train.steps_per_task}]"])
    assert "[" not in next(g for g in res if g["strategy"] == "generative_distillation")["label"]
    # epochs per task change nothing where steps per task are set: not a difference between groups
    c = _fake_run(tmp_path / "j600e", 69, "joint", [10, 25], [0.1, 0.1])
    cfg["seed"], cfg["train"]["epochs_per_task"] = 69, 100
    (c / "config.yaml").write_text(yaml.safe_dump(cfg))
    res = json.loads((make_report([a, b, c], tmp_path / "rep2") / "results.json").read_text())
    j600 = next(g for g in res if g["label"] == "joint [train.steps_per_task=600]")
    assert j600["seeds"] == [42, 69] and j600["final"]["fid_fmnist"][0] == pytest.approx(20.0)


def test_a_seed_still_running_does_not_hold_its_group_back(tmp_path):
    """The row is the mean over the seeds that reached the group's last task; the seed behind is named."""
    a = _fake_run(tmp_path / "gd42", 42, "generative_distillation", [10, 20, 30], [0.1, 0.2, 0.3])
    b = _fake_run(tmp_path / "gd69", 69, "generative_distillation", [12], [0.5], num_tasks=3)
    c = _fake_run(tmp_path / "gd1714", 1714, "generative_distillation", [10, 20, 50], [0.1, 0.2, 0.5])
    out = make_report([a, b, c], tmp_path / "rep")
    (g,) = json.loads((out / "results.json").read_text())
    assert g["final_task"] == 2 and g["complete_seeds"] == [42, 1714]
    assert g["final"]["fid_fmnist"][0] == pytest.approx(40.0) and g["final"]["kld"][0] == pytest.approx(0.4)
    assert g["behind"] == {"69": 1}
    assert g["per_task"]["0"]["fid_fmnist"][0] == pytest.approx(32 / 3)  # every seed where it has one
    assert g["wall_s"][0] == pytest.approx(30.0)  # the cost of the runs in the row, not of the one behind
    md = (out / "report.md").read_text()
    assert "| 3 | 42,1714 (of 42,69,1714) | 40.00 ± 10.00 |" in md
    assert "seed 69 after task 1" in md


def test_the_papers_numbers_stand_only_beside_its_own_setting(tmp_path):
    """Split Fashion-MNIST after 5 tasks with a 2-step teacher: the paper's GR/GD numbers; a 10-step teacher, or
    another data set, is not what the paper reported."""
    def run(name, teacher_steps=None, dataset=None):
        r = _fake_run(tmp_path / name, 42, name.split("-")[0], [10] * 5, [0.1] * 5)
        cfg = yaml.safe_load((r / "config.yaml").read_text())
        if teacher_steps is not None:
            cfg["strategy"]["teacher_steps"] = teacher_steps
        if dataset is not None:
            cfg["data"]["dataset"] = dataset
        (r / "config.yaml").write_text(yaml.safe_dump(cfg))
        return r

    runs = [run("generative_replay-s2", 2), run("generative_replay-s10", 10),
            run("generative_distillation-mnist", 2, "mnist"), run("naive")]
    res = json.loads((make_report(runs, tmp_path / "rep") / "results.json").read_text())
    paper = {(g["strategy"], g["label"]): g["paper"] for g in res}
    assert paper[("generative_replay", "generative_replay teacher_steps=2")] == {"fid": 211.8, "kld": 3.39}
    assert paper[("generative_replay", "generative_replay teacher_steps=10")] is None
    assert paper[("generative_distillation", "generative_distillation teacher_steps=2")] is None  # MNIST
    assert paper[("naive", "naive")] is None


def test_sample_grids_of_long_labels_keep_apart_and_an_earlier_reports_grids_go(tmp_path):
    """Labels with many differing settings must not make file names the file system refuses (255 bytes), nor
    two groups share one; a report written again into the same folder keeps no grids of groups it no longer has."""
    runs = []
    for i, extra in enumerate(("a" * 300 + "1", "a" * 300 + "2")):
        r = _fake_run(tmp_path / f"r{i}", 42, "generative_distillation", [10, 20], [0.1, 0.2])
        cfg = yaml.safe_load((r / "config.yaml").read_text())
        cfg["strategy"]["note"] = extra  # a strategy setting becomes part of the label
        (r / "config.yaml").write_text(yaml.safe_dump(cfg))
        Image.new("L", (8, 8), 128 + i).save(r / "samples" / "task_00.png")
        runs.append(r)
    out = make_report(runs, tmp_path / "rep")
    names = sorted(p.name for p in (out / "samples").iterdir())
    assert len(names) == 2 and len(set(names)) == 2 and all(len(n.encode()) < 255 for n in names)
    md = (out / "report.md").read_text()
    assert all(f"samples/{n}" in md for n in names)
    make_report(runs[:1], out)
    left = [p.name for p in (out / "samples").iterdir()]
    assert len(left) == 1 and left[0] in names


def test_runs_that_differ_in_a_training_setting_are_not_averaged_as_seeds(tmp_path):
    def run(name, seed, **train):
        f = _fake_run(tmp_path / name, seed, "generative_distillation", [10, 20 + seed], [0.1, 0.2])
        cfg = yaml.safe_load((f / "config.yaml").read_text())
        cfg["train"].update(train)
        (f / "config.yaml").write_text(yaml.safe_dump(cfg))
        return f
    runs = [run("plain", 1), run("plain_threads", 2, threads=1, log_every=5),  # repeats: only how they ran differs
            run("ema", 1, ema_decay=0.999), run("cosine", 1, lr_schedule="cosine", warmup_steps=20)]
    res = json.loads((make_report(runs, tmp_path / "rep") / "results.json").read_text())
    assert sorted(len(g["seeds"]) for g in res) == [1, 1, 2]
    labels = sorted(g["label"] for g in res)
    assert any("train.ema_decay=0.999" in x for x in labels) and any("train.lr_schedule=cosine" in x for x in labels)
    assert not any("threads" in x or "log_every" in x for x in labels)


def test_class_histograms_name_the_classes():
    from cldiff.report import class_names
    names = class_names("fashion_mnist", 10)
    assert names[0] == "0 T-shirt" and names[9] == "9 ankle boot" and len(names) == 10
    assert class_names("synthetic", 3) == ["0", "1", "2"]  # a set without names: the numbers


def test_reference_points_are_scored_like_the_runs(tmp_path, synthetic_evaluator, monkeypatch):
    # a synthetic-data run whose samples were all predicted as class 0: real images in that mix score worse than
    # real images of the seen classes in equal shares, and noise worst; without an evaluator the report says why
    from cldiff.report import reference_points
    f = _fake_run(tmp_path / "gd", 42, "generative_distillation", [10, 20], [0.1, 0.2])
    cfg = yaml.safe_load((f / "config.yaml").read_text())
    cfg["data"].update({"dataset": "synthetic", "class_order": [[0, 1], [2, 3]], "num_tasks": 2})
    cfg["eval"]["n_samples"] = 200
    cfg["train"]["steps_per_task"] = 10
    (f / "config.yaml").write_text(yaml.safe_dump(cfg))
    lines = (f / "metrics.jsonl").read_text().replace('"hist_pred": [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]',
                                                       '"hist_pred": [1.0, 0, 0, 0, 0, 0, 0, 0, 0, 0]')
    (f / "metrics.jsonl").write_text(lines)
    from cldiff.report import load_run, summarise
    groups = summarise([load_run(f)])
    rows, why = reference_points(groups, synthetic_evaluator)
    assert why is None and len(rows) == 3
    fid = {what.split(" (")[0].split(",")[0]: m["fid_synthetic"] for what, m in rows}
    real = next(v for k, v in fid.items() if k.startswith("real training images of the seen classes"))
    mix = next(v for k, v in fid.items() if "class mix" in k)
    noise = next(v for k, v in fid.items() if k.startswith("Gaussian noise"))
    assert real < mix < noise
    assert rows[2][1]["kld"] > 1.0 > rows[0][1]["kld"]  # one class of four: a large KLD; equal shares: small
    md = (make_report([f], tmp_path / "rep", evaluator=synthetic_evaluator) / "report.md").read_text()
    assert "Reference points" in md and "Gaussian noise" in md
    monkeypatch.setenv("CLDIFF_CACHE", str(tmp_path / "empty_cache"))  # no evaluator cached there
    md = (make_report([f], tmp_path / "rep2") / "report.md").read_text()
    assert "no cached evaluator" in md


def test_report_names_the_evaluator_and_warns_when_runs_used_several(tmp_path):
    # runs scored on two machines carry two evaluators' SHAs: the report says so and places no reference points
    def with_sha(folder, sha):
        lines = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
        for x in lines:
            if x["event"] == "eval":
                x["evaluator_sha256"] = sha
        (folder / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
        return folder
    a = with_sha(_fake_run(tmp_path / "gd1", 42, "generative_distillation", [10, 20], [0.1, 0.2]), "a" * 16)
    b = with_sha(_fake_run(tmp_path / "gd2", 69, "generative_distillation", [10, 30], [0.1, 0.4]), "a" * 16)
    md = (make_report([a, b], tmp_path / "one") / "report.md").read_text()
    assert f"Evaluator: `{'a' * 16}`" in md and "Warning" not in md
    with_sha(b, "b" * 16)
    md = (make_report([a, b], tmp_path / "two") / "report.md").read_text()
    assert "Warning: 2 evaluators scored these runs" in md and "b" * 16 in md
    assert "scored by 2 evaluators, so no reference points" in md
