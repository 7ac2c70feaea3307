"""GPU checks in one run (written for a lent H100/H200; `--quick` runs the same code small on CPU to test the script).

Sections, each timed and guarded (a failing section is recorded and the next one runs):
1. `nets`: one training step (forward, backward, SGD step) of segcook's default network for a BraTS plan (4 channels
   in, 3 regions out) at patch 128^3, batch 2: fp32, bf16 autocast, bf16 + channels_last_3d, each with
   cudnn.benchmark off and on; the same for MIST's configuration (residual, 2 deep-supervision heads) and for MONAI's
   DynUNet built like it. Median ms per step over `--steps` timed steps after warm-up, peak GPU memory.
2. `sliding_window`: segcook.inference.sliding_window vs MONAI's sliding_window_inference, same network (the default
   one, random weights, eval), same 1 x 4 x 240 x 240 x 155 input on the GPU, patch 128^3, overlap 0.5, Gaussian
   sigma 0.125, sw batch 2 and 4; fp32 and bf16; interleaved repetitions, every one recorded; max |difference|.
3. `pipeline`: the command line end to end on CUDA: `segcook phantom` (full-size BraTS-like cases), `analyze`,
   `preprocess`, `train --gpus 1` (NCCL, one process; DALI when installed, else the torch loader), `predict`
   (default and `--fast`) and `evaluate`; wall time of each command, the training log, predict's timing.csv.

Run:  PYTHONPATH=. python benchmarks/gpu.py --out DIR [--sections nets sliding_window pipeline] [--quick]
Results: DIR/results.json (rewritten after every section) and the markdown tables on stdout.
"""
import argparse, csv, json, os, shutil, statistics, subprocess, sys, time, traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def sync(dev):
    if dev.type == "cuda": torch.cuda.synchronize(dev)


def brats_plan(patch):
    "A BraTS-like plan (4 MR channels, regions WT/TC/ET) with `patch`, as analysis would write it."
    from segcook.core import Plan, Channel
    p = Plan(); p.channels = [Channel(name=n) for n in ("t1", "t1c", "t2", "flair")]
    p.labels.labels = [0, 1, 2, 3]; p.labels.regions = {"WT": [1, 2, 3], "TC": [1, 3], "ET": [3]}
    p.spatial.patch_size = list(patch); p.spatial.target_spacing = [1.0, 1.0, 1.0]
    return p


def monai_like_mist(cin, cout, patch):
    "MONAI's DynUNet with MIST's default choices (residual blocks, 2 deep-supervision heads, instance norm, leaky ReLU)."
    from monai.networks.nets import DynUNet
    from segcook.nets import get_topology
    k, s = get_topology(patch, [1, 1, 1], 5)
    return DynUNet(3, cin, cout, k, s, s[1:], filters=[min(32 * 2**i, 320) for i in range(len(s))],
                   norm_name=("INSTANCE", {"affine": True}), act_name=("leakyrelu", {"negative_slope": 0.01}),
                   deep_supervision=True, deep_supr_num=2, res_block=True)


def step_time(net, x, dev, mode, steps, warmup):
    "Median seconds of one SGD training step, and peak memory (MiB); mode: fp32, bf16, bf16_cl."
    net = net.to(dev).train()
    if mode == "bf16_cl":
        net = net.to(memory_format=torch.channels_last_3d); x = x.contiguous(memory_format=torch.channels_last_3d)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.99, nesterov=True)
    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, torch.bfloat16, enabled=mode != "fp32" and dev.type == "cuda"):
            out = net(x)
            outs = out if isinstance(out, (list, tuple)) else [out]
            if torch.is_tensor(out) and out.dim() == x.dim() + 1: outs = list(out.unbind(1))   # MONAI stacks DS heads
            loss = sum(o.float().square().mean() for o in outs)
        loss.backward(); opt.step()
    for _ in range(warmup): step()
    sync(dev)
    if dev.type == "cuda": torch.cuda.reset_peak_memory_stats(dev)
    ts = []
    for _ in range(steps):
        t = time.perf_counter(); step(); sync(dev); ts.append(time.perf_counter() - t)
    mem = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else float("nan")
    return statistics.median(ts), mem, ts


def section_nets(a, dev, res):
    from segcook.nets import build_net
    patch = [32, 32, 32] if a.quick else [128, 128, 128]
    bs, cin, cout = 2, 4, 3
    plan = brats_plan(patch)
    builders = {
        "segcook nnunet (default)": lambda: build_net(plan),
        "segcook nnunet, MIST's config (residual, 2 DS heads)": lambda: build_net(plan, residual=True, deep_supervision=2),
        "MONAI DynUNet like MIST's default": lambda: monai_like_mist(cin, cout, patch),
    }
    rows = []
    for bench in (False, True):
        torch.backends.cudnn.benchmark = bench
        for name, make in builders.items():
            for mode in ("fp32", "bf16", "bf16_cl"):
                torch.manual_seed(0)
                net = make(); params = sum(p.numel() for p in net.parameters())
                x = torch.randn(bs, cin, *patch, device=dev)
                med, mem, ts = step_time(net, x, dev, mode, a.steps, a.warmup)
                rows.append(dict(net=name, mode=mode, cudnn_benchmark=bench, params_m=round(params / 1e6, 2),
                                 ms_per_step=round(med * 1e3, 2), steps_per_s=round(1 / med, 2), peak_mib=round(mem) if mem == mem else None,
                                 all_ms=[round(t * 1e3, 2) for t in ts]))
                print(f"  {name} | {mode} | cudnn.benchmark={bench}: {med * 1e3:.1f} ms/step, peak {mem:.0f} MiB", flush=True)
                del net, x
                if dev.type == "cuda": torch.cuda.empty_cache()
    torch.backends.cudnn.benchmark = False
    res["nets"] = dict(patch=patch, batch=bs, in_channels=cin, out_channels=cout, steps=a.steps, warmup=a.warmup, rows=rows)
    print(f"\ntraining step (forward, backward, SGD), batch {bs} x {cin} x {tuple(patch)}, {cout} outputs; median of {a.steps} steps after {a.warmup} warm-up\n")
    print("| network | params (M) | cudnn.benchmark | fp32 ms | bf16 ms | bf16 + channels_last_3d ms | fp32 / bf16 | peak MiB fp32 / bf16 |")
    print("|---|---|---|---|---|---|---|---|")
    for bench in (False, True):
        for name in builders:
            r = {q["mode"]: q for q in rows if q["net"] == name and q["cudnn_benchmark"] == bench}
            print(f"| {name} | {r['fp32']['params_m']} | {bench} | {r['fp32']['ms_per_step']} | {r['bf16']['ms_per_step']} | "
                  f"{r['bf16_cl']['ms_per_step']} | {r['fp32']['ms_per_step'] / r['bf16']['ms_per_step']:.2f} | "
                  f"{r['fp32']['peak_mib']} / {r['bf16']['peak_mib']} |")


def section_sliding_window(a, dev, res):
    from monai.inferers import sliding_window_inference
    from segcook.nets import build_net
    from segcook.inference import sliding_window
    size = [4, 60, 60, 40] if a.quick else [4, 240, 240, 155]
    patch = [32, 32, 32] if a.quick else [128, 128, 128]
    torch.manual_seed(0)
    net = build_net(brats_plan(patch)).to(dev).eval()
    x = torch.randn(1, *size, device=dev)
    rows, diffs = [], {}
    for swb in (2, 4):
        for amp in (False, True):
            ours = lambda: sliding_window(net, x, patch, overlap=0.5, sigma=0.125, sw_batch_size=swb, amp=amp)
            def theirs():
                with torch.autocast(dev.type, torch.bfloat16, enabled=amp and dev.type == "cuda"):
                    return sliding_window_inference(x, patch, swb, net, overlap=0.5, mode="gaussian", sigma_scale=0.125).float()
            with torch.no_grad():
                ours(); theirs(); sync(dev)                                  # warm-up (cuDNN, allocator)
                t_s, t_m = [], []
                for _ in range(a.reps):
                    t = time.perf_counter(); y_m = theirs(); sync(dev); t_m.append(time.perf_counter() - t)
                    t = time.perf_counter(); y_s = ours(); sync(dev); t_s.append(time.perf_counter() - t)
                d = (y_s - y_m).abs().max().item()
            rows.append(dict(sw_batch=swb, bf16=amp, segcook_s=[round(t, 4) for t in t_s], monai_s=[round(t, 4) for t in t_m],
                             ratio_median=round(statistics.median(t_m) / statistics.median(t_s), 3), max_abs_diff=d))
            print(f"  sw batch {swb}, bf16 {amp}: segcook {statistics.median(t_s):.3f} s, MONAI {statistics.median(t_m):.3f} s, diff {d:.2e}", flush=True)
    res["sliding_window"] = dict(size=size, patch=patch, overlap=0.5, sigma=0.125, reps=a.reps, rows=rows)
    print(f"\nsliding window, input 1 x {' x '.join(map(str, size))} on {dev.type}, patch {tuple(patch)}, overlap 0.5, Gaussian 0.125, {a.reps} reps after a warm-up\n")
    print("| sw batch | bf16 | segcook s (median; all) | MONAI s (median; all) | MONAI / segcook | max abs diff |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['sw_batch']} | {r['bf16']} | {statistics.median(r['segcook_s']):.3f}; {', '.join(map(str, r['segcook_s']))} | "
              f"{statistics.median(r['monai_s']):.3f}; {', '.join(map(str, r['monai_s']))} | {r['ratio_median']:.2f} | {r['max_abs_diff']:.2e} |")


def run(cmd, log, env=None):
    "Run a command line, its output appended to `log`; returns (wall seconds, return code)."
    t = time.perf_counter()
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(map(str, cmd))}\n"); f.flush()
        rc = subprocess.run([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    return time.perf_counter() - t, rc


def section_pipeline(a, dev, res):
    w = Path(a.work); shutil.rmtree(w, ignore_errors=True); w.mkdir(parents=True)
    log = Path(a.out)/"pipeline.log"
    seg = [sys.executable, "-c", "import sys; from segcook.cli import main; sys.exit(main())"]
    size = ["48", "48", "40"] if a.quick else ["240", "240", "155"]
    gpus = "1" if dev.type == "cuda" else "0"
    nw = str(min(16, os.cpu_count() or 1))
    steps = [
        ("phantom", seg + ["phantom", "--out", w/"data", "--cases", "8", "--test-cases", "2", "--size", *size, "--workers", nw]),
        ("analyze", seg + ["analyze", "--data", w/"data"/"dataset.json", "--exp", w/"exp", "--workers", nw]),
        ("preprocess", seg + ["preprocess", "--exp", w/"exp", "--workers", nw]),
        ("train", seg + ["train", "--exp", w/"exp", "--folds", "0", "--gpus", gpus, "--epochs", "2",
                         "--steps-per-epoch", "5" if a.quick else str(a.train_steps)]),
        ("predict", seg + ["predict", "--exp", w/"exp", "--input", w/"data"/"dataset.json", "--out", w/"exp"/"predictions"/"test"]
                     + ([] if dev.type == "cuda" else ["--no-tta"])),
        ("predict_fast", seg + ["predict", "--exp", w/"exp", "--input", w/"data"/"dataset.json", "--out", w/"exp"/"predictions"/"fast", "--fast"]),
        ("evaluate", seg + ["evaluate", "--exp", w/"exp", "--name", "test", "--workers", nw]),
    ]
    out = res["pipeline"] = dict(size=size, device=dev.type, commands={})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    for name, cmd in steps:
        s, rc = run(cmd, log, env)
        out["commands"][name] = dict(cmd="segcook " + " ".join(map(str, cmd[3:])), wall_s=round(s, 2), rc=rc)
        print(f"  {name}: {s:.1f} s, rc {rc}", flush=True)
        Path(a.out, "results.json").write_text(json.dumps(res, indent=1))
        if rc != 0: break
    exp = w/"exp"
    for f, key in ((exp/"config.json", "plan"),):
        if f.exists():
            p = json.loads(f.read_text()); out[key] = dict(patch=p["spatial"]["patch_size"], arch=p["train"]["arch"], amp=p["train"].get("amp"),
                                                            batch=p["train"].get("batch_size"), loss=p["train"].get("loss"))
    logc = exp/"models"/"fold_0"/"log.csv"
    if logc.exists(): out["train_log"] = list(csv.DictReader(open(logc)))
    for name in ("test", "fast"):
        t = exp/"predictions"/name/"timing.csv"
        if t.exists(): out[f"timing_{name}"] = list(csv.DictReader(open(t)))
    r = exp/"results.csv"
    if r.exists(): out["results_tail"] = r.read_text().splitlines()[-6:]
    for f in (logc, exp/"predictions"/"test"/"timing.csv", exp/"predictions"/"fast"/"timing.csv", r):
        if f.exists(): shutil.copy(f, Path(a.out)/f"pipeline_{f.parent.name}_{f.name}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True); ap.add_argument("--work", default="/tmp/segcook_gpu")
    ap.add_argument("--sections", nargs="+", default=["nets", "sliding_window", "pipeline"])
    ap.add_argument("--steps", type=int, default=20); ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--reps", type=int, default=3); ap.add_argument("--train-steps", type=int, default=50)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, any device: tests the script itself")
    a = ap.parse_args()
    if a.quick: a.steps, a.warmup, a.reps = 2, 1, 1
    Path(a.out).mkdir(parents=True, exist_ok=True)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    res = dict(device=torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu", torch=torch.__version__,
               cuda=torch.version.cuda, python=sys.version.split()[0], cpus=os.cpu_count(), sections={})
    try: import nvidia.dali as d; res["dali"] = d.__version__
    except ImportError: res["dali"] = None
    print(json.dumps({k: v for k, v in res.items() if k != "sections"}), flush=True)
    fns = dict(nets=section_nets, sliding_window=section_sliding_window, pipeline=section_pipeline)
    for s in a.sections:
        t = time.perf_counter(); print(f"\n## {s}", flush=True)
        try: fns[s](a, dev, res); ok = "ok"
        except Exception: ok = traceback.format_exc(); print(ok, flush=True)
        res["sections"][s] = dict(status=ok, seconds=round(time.perf_counter() - t, 1))
        Path(a.out, "results.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__": main()
