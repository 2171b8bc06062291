"""Does a classifier distilled on a run's generated images work on real ones? (README, "The classifier").

The classifier protocol (docs/protocol.md §5) keeps an earlier task only through distillation on replayed
images. This probe isolates that step on task 0, without any new task to interfere:

1. teacher: the protocol's classifier trained on real task-0 images (same net, batch and lr as the run; 5 epochs, as in the README);
2. the run's end-of-task-0 diffusion model generates a pool of replay images (the run's replay settings);
3. two students start from scratch and learn only by distillation from the teacher (T = classifier.temperature,
   KL(teacher || student)), for the same number of iterations: one on the generated pool, one on a pool of as
   many real task-0 training images. Both are tested on the real task-0 test images.

If the student of the generated pool is far below the student of the real pool, the generated images do not
carry the teacher's knowledge to real images: the generator, not the protocol, limits the classifier.
4. task 1 of the protocol with each pool as the replay (the classifier continues from the teacher: half
   cross-entropy on real task-1 images, half distillation on the pool): accuracy on both tasks and how many
   real task-0 test images it calls a task-1 class. If distillation alone transfers (3.) but this fails with
   the generated pool only, the classifier separates the generated images from the real ones and learns
   "real-looking means a new class": a shortcut that real replay cannot offer. To test that directly, the
   classifiers after task 1 also label a held-out pool of generated task-0 images (same model and settings,
   another seed, never trained on): under the shortcut they keep those in task 0 while calling real task-0
   images a task-1 class.
Also printed: how the evaluator and the teacher label the generated images.

    .venv/bin/python docs/results/split_fmnist_cpu/probes/classifier_transfer_probe.py runs/split_fmnist_cpu/generative_distillation_seed42
"""
import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cldiff.checkpoint import list_checkpoints
from cldiff.classifier import SolverNet, kd_loss, task_accuracies
from cldiff.config import GENERATION_BATCH, load_config
from cldiff.data import ContinualData
from cldiff.evaluate import get_evaluator
from cldiff.model import generate
from cldiff.model import autocast_for
from cldiff.runfolder import load_model


def train(net, iters, batch_fn, lr, autocast):
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    for _ in range(iters):
        with autocast():
            loss = batch_fn(net)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return net.eval()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", help="a run folder with an end-of-task-0 checkpoint")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=float, default=5, help="as `cldiff classify --set classifier.epochs=5` (README)")
    ap.add_argument("--pool", type=int, default=2000, help="replay pool size (classifier.replay_pool)")
    ap.add_argument("--heldout", type=int, default=1000, help="held-out generated task-0 images for the shortcut test")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    run = Path(a.run)
    cfg = load_config(run / "config.yaml")
    c = cfg.classifier
    dev = torch.device("cpu")
    autocast = autocast_for(dev, cfg.train.precision)
    data = ContinualData.from_config(cfg)
    classes = list(data.tasks[0])
    x, y = data.train(classes)
    pool_n = a.pool
    iters = int(round(a.epochs * ((len(x) + c.batch_size - 1) // c.batch_size)))
    g = torch.Generator().manual_seed(a.seed)
    t0 = time.perf_counter()

    def real_batch(net):
        i = torch.randint(0, len(x), (c.batch_size,), generator=g)
        return F.cross_entropy(net(x[i]), y[i])

    torch.manual_seed(a.seed)
    teacher = train(SolverNet(data.spec.channels, data.spec.num_classes), iters, real_batch, c.lr, autocast)
    teacher.requires_grad_(False)

    ckpt = {m["task"]: m for m in list_checkpoints(run) if m.get("complete", True)}[0]["path"]
    model, schedule, _, _ = load_model(ckpt, dev)
    model.requires_grad_(False)
    gen_pool = generate(model, schedule, pool_n, c.replay_steps, 0.0, a.seed + 1, GENERATION_BATCH, dev, autocast,
                        tuple(x.shape[1:]))
    real_pool = x[torch.randperm(len(x), generator=g)[:pool_n]]
    heldout = generate(model, schedule, a.heldout, c.replay_steps, 0.0, a.seed + 4, GENERATION_BATCH, dev, autocast,
                       tuple(x.shape[1:]))

    ev = get_evaluator(cfg.data.dataset, dev, cfg.data.root)
    _, ev_pred = ev.run(gen_pool)
    with torch.no_grad():
        t_pred = teacher(gen_pool).argmax(1).numpy()
        t_conf = F.softmax(teacher(gen_pool), 1).max(1).values.mean().item()
        t_conf_real = F.softmax(teacher(real_pool), 1).max(1).values.mean().item()
        teacher_h = teacher(heldout).argmax(1).numpy()  # the task-0 teacher's labels of the held-out pool

    def student(pool):
        torch.manual_seed(a.seed + 2)
        with torch.no_grad():
            soft = teacher(pool)

        def batch(net):
            i = torch.randint(0, len(pool), (c.batch_size,), generator=g)
            return c.temperature ** 2 * kd_loss(net(pool[i]).float(), soft[i], c.temperature, c.kd_direction)
        return train(SolverNet(data.spec.channels, data.spec.num_classes), iters, batch, c.lr, autocast)

    x1, y1 = data.train(list(data.tasks[1]))
    x0t, _ = data.test(classes)

    def protocol_task1(pool):
        """Task 1 of the protocol with this pool as the replay: the classifier continues from the teacher,
        w CE(real task 1) + (1 - w) T^2 KD(teacher on the replay), w = 1/2."""
        torch.manual_seed(a.seed + 3)
        net = copy.deepcopy(teacher).requires_grad_(True)
        with torch.no_grad():
            soft = teacher(pool)

        def batch(net):
            i = torch.randint(0, len(x1), (c.batch_size,), generator=g)
            j = torch.randint(0, len(pool), (c.batch_size,), generator=g)
            kd = kd_loss(net(pool[j]).float(), soft[j], c.temperature, c.kd_direction)
            return 0.5 * F.cross_entropy(net(x1[i]), y1[i]) + 0.5 * c.temperature ** 2 * kd
        net = train(net, iters, batch, c.lr, autocast)
        with torch.no_grad():
            pred0 = net(x0t).argmax(1)
            pred_h = net(heldout).argmax(1).numpy()
        acc = task_accuracies(net, data, 1, dev)
        new = list(data.tasks[1])
        return {"acc_task0": acc[0], "acc_task1": acc[1],
                "task0_test_predicted_as_task1_classes": float(np.isin(pred0.numpy(), new).mean()),
                "heldout_generated_task0_predicted_as_task1_classes": float(np.isin(pred_h, new).mean()),
                "heldout_generated_agreement_with_teacher": float(np.mean(pred_h == teacher_h))}

    s_gen, s_real = student(gen_pool), student(real_pool)
    p_gen, p_real = protocol_task1(gen_pool), protocol_task1(real_pool)
    res = {
        "run": str(run), "task0_classes": classes, "pool": pool_n, "heldout_generated": a.heldout,
        "replay_steps": c.replay_steps, "iters": iters,
        "teacher_acc_real_test": task_accuracies(teacher, data, 0, dev)[0],
        "student_from_generated_acc_real_test": task_accuracies(s_gen, data, 0, dev)[0],
        "student_from_real_pool_acc_real_test": task_accuracies(s_real, data, 0, dev)[0],
        "protocol_task1_generated_replay": p_gen, "protocol_task1_real_replay": p_real,
        "evaluator_labels_of_generated": {int(k): int(v) for k, v in zip(*np.unique(ev_pred, return_counts=True))},
        "teacher_labels_of_generated": {int(k): int(v) for k, v in zip(*np.unique(t_pred, return_counts=True))},
        "teacher_evaluator_agreement_on_generated": float(np.mean(t_pred == np.asarray(ev_pred))),
        "teacher_mean_confidence_generated": t_conf, "teacher_mean_confidence_real_pool": t_conf_real,
        "wall_s": time.perf_counter() - t0,
    }
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
