"""Property-based: every broken config is rejected cleanly (ConfigError naming the field); no valid one is."""
import copy
import dataclasses

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cldiff.config import Config, ConfigError, config_from_dict

# every key the config knows, per section ("" is the top level): an "unknown" key must not be one of them
KNOWN = {"": {f.name for f in dataclasses.fields(Config)}}
KNOWN.update({f.name: {g.name for g in dataclasses.fields(f.default_factory)}
              for f in dataclasses.fields(Config) if dataclasses.is_dataclass(f.default_factory)})

BASE = {"seed": 42, "data": {"dataset": "synthetic", "class_order": "sorted", "num_tasks": 3},
        "model": {"preset": "tiny"}, "train": {"batch_size": 8, "steps_per_task": 3},
        "strategy": {"name": "generative_distillation", "lam": 1.0, "teacher_steps": 2}}

# (path, a broken value, the text the error must contain)
BREAKS = st.sampled_from([
    (("train", "batch_size"), 0, "train.batch_size"),
    (("train", "batch_size"), "big", "train.batch_size"),
    (("train", "lr"), -1.0, "train.lr"),
    (("train", "precision"), "fp8", "train.precision"),
    (("train", "grad_clip"), [1], "train.grad_clip"),
    (("model", "preset"), "huge", "model.preset"),
    (("data", "num_tasks"), 0, "data.num_tasks"),
    (("data", "class_order"), [[0, 1], [1, 2], [3]], "partition"),
    (("data", "class_order"), [[0, 11]], "class ids"),
    (("data", "class_order"), "shuffled", "data.class_order"),
    (("data", "dataset"), "imagenet", "data.dataset"),
    (("strategy", "lam"), -0.5, "lam"),
    (("strategy", "teacher_steps"), 0, "teacher_steps >= 1"),
    (("strategy", "name"), "generative_distilation", "did you mean"),
    (("eval", "n_samples"), 1, "eval.n_samples"),
    (("resume",), "always", "resume"),
    (("classifier", "mode"), "lwf", "classifier.mode"),
])

UNKNOWN_KEY = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=3, max_size=12)


def _set(d, path, value):
    for p in path[:-1]:
        d = d.setdefault(p, {})
    d[path[-1]] = value


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(breaks=st.lists(BREAKS, min_size=1, max_size=4, unique_by=lambda b: b[0]), extra=st.booleans(),
       key=UNKNOWN_KEY, section=st.sampled_from(["", "train", "data", "model", "eval"]))
# a generated "unknown" key that the config knows (found by CI): no unknown-key error is due for it
@example(breaks=[(("train", "batch_size"), 0, "train.batch_size")], extra=True, key="name", section="")
@example(breaks=[(("train", "batch_size"), 0, "train.batch_size")], extra=True, key="steps", section="eval")
def test_broken_configs_are_rejected_with_every_problem(breaks, extra, key, section):
    raw = copy.deepcopy(BASE)
    for path, value, _ in breaks:
        _set(raw, path, value)
    unknown = extra and key not in KNOWN[section]
    if unknown:
        (raw.setdefault(section, {}) if section else raw)[key] = 1
    try:
        config_from_dict(raw)
    except ConfigError as e:
        text = "\n".join(e.problems)
        bad_name = any(path == ("strategy", "name") for path, _, _ in breaks)
        for path, _, needle in breaks:
            if bad_name and path[0] == "strategy" and path != ("strategy", "name"):
                continue  # an unknown strategy has no known fields to check
            assert needle in text, (needle, text)
        if unknown:
            assert f"{key}: unknown key" in text or "unknown field" in text
    else:
        raise AssertionError(f"accepted a broken config: {raw}")


@settings(max_examples=80, deadline=None)
@given(batch=st.integers(1, 512), lr=st.floats(1e-6, 1.0), lam=st.floats(0, 30), steps=st.integers(1, 100),
       tasks=st.integers(1, 5), preset=st.sampled_from(["tiny", "small", "paper"]),
       name=st.sampled_from(["generative_distillation", "generative_replay", "partial_generation_distillation"]),
       lr_as_text=st.booleans())
def test_valid_configs_are_accepted(batch, lr, lam, steps, tasks, preset, name, lr_as_text):
    raw = copy.deepcopy(BASE)
    raw["train"].update(batch_size=batch, lr=f"{lr:e}" if lr_as_text else lr)  # YAML 1.1 reads 1e-3 as text
    raw["data"]["num_tasks"] = tasks
    raw["model"]["preset"] = preset
    raw["strategy"] = {"name": name, "lam": lam, "teacher_steps": steps}
    cfg = config_from_dict(raw)
    assert cfg.train.lr == float(f"{lr:e}" if lr_as_text else lr)
