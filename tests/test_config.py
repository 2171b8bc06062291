import subprocess
import sys

import pytest

from cldiff.config import ConfigError, config_from_dict, load_config

from conftest import CONFIGS


PRESETS = sorted(p for p in CONFIGS.rglob("*.yaml") if "sweeps" not in p.parts)


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_shipped_preset_loads(path):
    cfg = load_config(path)
    assert cfg.strategy["name"] and cfg.run_name()


def test_all_problems_are_reported_together():
    with pytest.raises(ConfigError) as e:
        config_from_dict({"trian": {}, "train": {"batch_size": 0, "lr": "fast"}, "model": {"preset": "huge"},
                          "strategy": {"name": "generative_replay", "teacher_steps": 0}, "steps_per_task": 3})
    probs = e.value.problems
    text = "\n".join(probs)
    assert "did you mean 'train'" in text and "train.lr: expected float" in text
    assert len(probs) >= 3


def test_range_problems_are_reported_together():
    with pytest.raises(ConfigError) as e:
        config_from_dict({"train": {"batch_size": 0, "steps_per_task": 5}, "model": {"preset": "huge"},
                          "data": {"class_order": [[0, 1], [1, 2]], "num_tasks": 2},
                          "strategy": {"name": "generative_replay", "teacher_steps": 0}})
    text = "\n".join(e.value.problems)
    for needle in ("train.batch_size", "model.preset: unknown preset 'huge'", "partition", "teacher_steps >= 1"):
        assert needle in text


def test_run_name_is_derived_from_settings():
    a = config_from_dict({"train": {"steps_per_task": 5}, "strategy": {"name": "generative_distillation", "lam": 0.5}})
    b = config_from_dict({"train": {"steps_per_task": 5}, "strategy": {"name": "generative_distillation", "lam": 1.0}})
    assert a.run_name() != b.run_name() and "lam0.5" in a.run_name() and "seed42" in a.run_name()


@pytest.mark.slow
def test_cli_config_error_exit_2_without_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("strategy: {name: generative_distilation}\ntrain: {steps_per_task: 1, batch_sise: 3}\n")
    r = subprocess.run([sys.executable, "-m", "cldiff", "train", "--config", str(bad)], capture_output=True, text=True)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "did you mean 'batch_size'" in r.stderr


def test_cli_help_on_every_subcommand(capsys):
    import argparse

    from cldiff.cli import _parser
    # every subcommand the parser has (not a list kept by hand), nested ones too
    subs, todo = [], [([], _parser())]
    while todo:
        path, p = todo.pop()
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, child in a.choices.items():
                    subs.append(path + [name])
                    todo.append((path + [name], child))
    assert {"train", "sample", "evaluate", "classify", "fid", "report", "sweep", "bench", "evaluator"} <= \
        {s[0] for s in subs}
    # the entry point itself once in a fresh process; the parser of every subcommand in this one
    r = subprocess.run([sys.executable, "-m", "cldiff", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "usage: cldiff" in r.stdout
    from cldiff.cli import main
    for sub in subs:
        with pytest.raises(SystemExit) as e:
            main([*sub, "--help"])
        out = capsys.readouterr().out
        assert e.value.code == 0 and out.startswith("usage: cldiff " + " ".join(sub)), sub
