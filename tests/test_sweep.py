"""Sweep planning: per-entry overrides, folder names, and the shipped CPU grid matching the `cpu` presets."""
import pytest
import yaml

from cldiff import sweep
from cldiff.config import EXECUTION_ONLY, ConfigError, load_config

from conftest import CONFIGS


def _write(tmp_path, strategies, **extra):
    sw = tmp_path / "s.yaml"
    sw.write_text(yaml.safe_dump({"base": str(CONFIGS / "split_fmnist" / "smoke.yaml"), "out": str(tmp_path / "out"),
                                  "grid": {"seed": [42], "strategy": strategies}, **extra}))
    return sw


def test_entry_set_applies_to_its_runs_only_and_names_the_folder(tmp_path):
    sw = _write(tmp_path, [{"name": "joint"}, {"name": "joint", "set": {"train.steps_per_task": 9}},
                           {"name": "naive"}], set={"train.steps_per_task": 3})
    runs, _ = sweep.plan(sw)
    steps = {r.out.name: r.cfg.train.steps_per_task for r in runs}
    plain = next(n for n in steps if n.startswith("fashion_mnist_joint") and "steps_per_task" not in n)
    assert steps[plain] == 3                               # the sweep's set
    assert steps[plain + "_train.steps_per_task9"] == 9    # the entry's set wins, and is in the name
    assert [s for n, s in steps.items() if "naive" in n] == [3]
    assert all("set" not in r.cfg.strategy for r in runs)  # not passed on as a strategy field


def test_runs_that_would_share_a_folder_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="share the folder"):
        sweep.plan(_write(tmp_path, [{"name": "naive"}, {"name": "naive"}]))


def test_entry_set_must_be_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match="must be a mapping"):
        sweep.plan(_write(tmp_path, [{"name": "joint", "set": "train.steps_per_task=9"}]))


def _experiment(cfg) -> dict:
    """The config without where the run goes and how it executes (threads, checkpoints): the experiment."""
    d = cfg.to_dict()
    d.pop("out_dir"), d.pop("name")
    for k in EXECUTION_ONLY:
        d["train"].pop(k)
    return d


@pytest.mark.parametrize("sweep_file,presets,preset_name", [
    ("split_fmnist_cpu.yaml", "cpu", None),
    ("split_fmnist_cpu_conditional.yaml", "cpu_conditional", None),
    # the preset quotes this sweep's results
    ("split_fmnist_cpu_gd_s3_quarter_replay.yaml", "cpu", "generative_distillation_quarter_replay")])
def test_cpu_sweep_plans_exactly_the_cpu_presets(sweep_file, presets, preset_name):
    # The README's grid is made from configs/split_fmnist/cpu/NAME.yaml (NAME: the strategy's, or preset_name);
    # the sweep must be the same experiment.
    runs, _ = sweep.plan(CONFIGS / "sweeps" / sweep_file)
    assert {r.cfg.seed for r in runs} == {42, 69, 1714}
    for r in runs:
        preset = load_config(CONFIGS / "split_fmnist" / presets / f"{preset_name or r.cfg.strategy['name']}.yaml",
                             [f"seed={r.cfg.seed}"])
        assert _experiment(r.cfg) == _experiment(preset), r.out.name


def test_random_orders_sweep_is_the_cpu_presets_on_random_orders():
    # docs/results/split_fmnist_cpu_random_orders/ reports these runs as the `cpu` presets on random class orders:
    # they must stay the presets' experiment with only the order changed.
    runs, _ = sweep.plan(CONFIGS / "sweeps" / "split_fmnist_cpu_random_orders.yaml")
    assert {(r.cfg.seed, r.cfg.strategy["name"]) for r in runs} == {
        (s, n) for s in (1, 2) for n in ("generative_distillation", "generative_replay", "joint")}
    for r in runs:
        assert r.cfg.data.class_order == "random"
        preset = load_config(CONFIGS / "split_fmnist" / "cpu" / f"{r.cfg.strategy['name']}.yaml",
                             [f"seed={r.cfg.seed}", "data.class_order=random"])
        assert _experiment(r.cfg) == _experiment(preset), r.out.name


def test_a_folder_planned_by_several_sweep_files_is_one_experiment():
    # Sweep files may share a folder (the trajectory variants reuse the `cpu` table's GD runs as their task-0
    # source): a run resumed by either file must find the settings it was made with.
    planned: dict = {}
    for f in sorted((CONFIGS / "sweeps").glob("*.yaml")):
        for r in sweep.plan(f)[0]:
            planned.setdefault(r.out, []).append((f.name, _experiment(r.cfg)))
    shared = {out: v for out, v in planned.items() if len({name for name, _ in v}) > 1}
    for out, v in shared.items():
        assert all(d == v[0][1] for _, d in v), f"{out}: planned differently by {[n for n, _ in v]}"
    traj = {r.out for r in sweep.plan(CONFIGS / "sweeps" / "split_fmnist_cpu_trajectory.yaml")[0]
            if r.cfg.strategy["name"] == "generative_distillation"}
    assert len(traj) == 3 and traj <= set(shared)  # its GD runs are the `cpu` table's own


def test_a_run_interrupted_in_its_last_task_is_not_finished(tmp_path):
    # a SIGINT during the last task leaves a mid-task checkpoint of that task (complete: False); the sweep must
    # resume the run, not call it done and report it with a task missing
    from cldiff.checkpoint import save_checkpoint
    save_checkpoint(tmp_path, "task_00", {}, {"task": 0, "step": 10, "complete": True})
    save_checkpoint(tmp_path, "task_01_step_0000001", {}, {"task": 1, "step": 1, "complete": False})
    assert not sweep.is_finished(tmp_path, 2)
    assert sweep.is_finished(tmp_path, 1)
    save_checkpoint(tmp_path, "task_01", {}, {"task": 1, "step": 10, "complete": True})
    assert sweep.is_finished(tmp_path, 2)
