"""bf16 autocast (the default) against fp32 weights and activations with oneDNN's bf16 internal math for
convolutions and matmuls (torch.backends.mkldnn.{conv,matmul}.fp32_precision = "bf16", PyTorch >= 2.9): no
autocast casts, the arithmetic of the convolutions still on AMX. In alternation in one process, the small UNet at
28x28, batch 64, 2 threads, 3 iterations per mode and round, the order swapped every round:
    python docs/results/bench/onednn_math.py naive 4
    python docs/results/bench/onednn_math.py generative_distillation 4"""
import sys, time, contextlib, torch
from cldiff.model import EpsModel, NoiseSchedule, autocast_for
from cldiff.strategies import build_strategy, TaskContext
from cldiff.train import train_step
torch.set_num_threads(2)
name = sys.argv[1] if len(sys.argv) > 1 else "naive"
size, batch = 28, 64
torch.manual_seed(0)
model = EpsModel("small", image_size=size)
sched = NoiseSchedule()
st = build_strategy({"name": name})
ac_bf16 = autocast_for(torch.device("cpu"), "bf16")
if st.uses_teacher:
    st.end_task(model, TaskContext(0, None, [], sched, torch.device("cpu"), ac_bf16))
opt = torch.optim.Adam(model.parameters(), 2e-4)
x0 = torch.rand(batch, 1, size, size) * 2 - 1
gen = torch.Generator().manual_seed(0)
def mode(m):
    p = "bf16" if m == "onednn" else "none"
    torch.backends.mkldnn.conv.fp32_precision = p
    torch.backends.mkldnn.matmul.fp32_precision = p
    return contextlib.nullcontext if m == "onednn" else ac_bf16
for m in ("autocast", "onednn"):
    ac = mode(m)
    for _ in range(2):
        train_step(model, opt, st, sched, x0, 1, gen, ac, 1.0)
res = {"autocast": [], "onednn": []}
for r in range(int(sys.argv[2]) if len(sys.argv) > 2 else 4):
    for m in ("autocast", "onednn") if r % 2 == 0 else ("onednn", "autocast"):
        ac = mode(m)
        t0 = time.perf_counter()
        for _ in range(3):
            train_step(model, opt, st, sched, x0, 1, gen, ac, 1.0)
        res[m].append((time.perf_counter() - t0) / 3)
    print(r, {k: round(v[-1], 3) for k, v in res.items()}, flush=True)
a, o = (sum(v) / len(v) for v in res.values())
print(f"{name}: autocast {a:.3f} s/iter, fp32+oneDNN bf16 {o:.3f} s/iter, speedup {a / o:.2f}x; per round",
      [round(x / y, 2) for x, y in zip(res["autocast"], res["onednn"])])
