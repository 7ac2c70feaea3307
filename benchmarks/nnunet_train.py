"""Training iterations per second on the CPU, side by side with nnU-Net v2's `nnUNetTrainer` (2.8.1), same patch,
same batch, same network size, each tool's own data loading and augmentation included, interleaved repetitions.

- nnU-Net: `nnUNetTrainer` of its own 3d_fullres plan (PlainConvUNet, deep supervision, its loader with
  `nnUNet_n_proc_DA` background augmentation processes), device cpu; a subclass only times its training loop:
  `--epochs` epochs of `--steps` `train_step(next(dataloader_train))` calls each (data loading included), no validation
  (nothing is scored: speed does not depend on it).
- segcook: `segcook train --epochs E --steps-per-epoch S --folds 0` on the same cases, its plan with nnU-Net's patch
  (reversed into segcook's x, y, z order), batch 2, `nnunet` architecture, no validation cases (`val_fraction 0`), so
  the seconds of an epoch in `log.csv` are its training steps (loader included) plus the per-epoch checkpoint.

The first epoch of each run is a warm-up (loader start, first allocations) and is left out: the rate of a run is
steps / median seconds of its later epochs. Each tool gets `--threads` torch threads; nnU-Net `--workers` augmentation
processes, segcook its DALI CPU pipeline (min(4, cores) threads). Deep supervision: each tool's own default (nnU-Net on,
segcook's plan off), printed with the results.

Needs the folders made by benchmarks/nnunet.py (same --work: nnU-Net's preprocessed dataset, segcook's experiment)
and the peer venv of its docstring. Run:
    PYTHONPATH=. .venv/bin/python benchmarks/nnunet_train.py --data /work/peers/data/ph8/dataset.json --reps 2
"""
import argparse, csv, json, os, shutil, statistics, subprocess, sys, time
from pathlib import Path

NNUNET_PY = Path(os.environ.get("NNUNET_BIN", "/work/peers/nnunet/bin"))/"python"
SEGCOOK = os.environ.get("SEGCOOK_BIN", str(Path(sys.executable).parent/"segcook"))   # the segcook command

PEER = r'''
import sys, json, time, torch
from pathlib import Path
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
pre_ds, steps, epochs, threads = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])

class Timed(nnUNetTrainer):
    "nnUNetTrainer whose training loop is timed per epoch; no validation, no checkpoints."
    def run_training(self):
        self.on_train_start()
        secs = []
        for epoch in range(epochs):
            self.on_epoch_start(); self.on_train_epoch_start()
            t0 = time.perf_counter()
            outs = [self.train_step(next(self.dataloader_train)) for _ in range(steps)]
            secs.append(time.perf_counter() - t0)
            self.on_train_epoch_end(outs)
            self.current_epoch += 1
        self.dataloader_train._finish(); self.dataloader_val._finish()
        n = sum(p.numel() for p in self.network.parameters())
        print("RESULT", json.dumps({"seconds": secs, "params": n, "patch": list(self.configuration_manager.patch_size),
                                    "batch": self.batch_size}), flush=True)

def main():
    torch.set_num_threads(threads)
    plans = json.loads((pre_ds/"nnUNetPlans.json").read_text())
    dj = json.loads((pre_ds/"dataset.json").read_text())
    plans["continue_training"] = False            # what nnunetv2.run.run_training adds before it builds a trainer
    Timed(plans, "3d_fullres", 0, dj, device=torch.device("cpu")).run_training()

if __name__ == "__main__": main()
'''


def run(cmd, env, log):
    with open(log, "a") as f: r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=f, env=env, text=True)
    with open(log, "a") as f: f.write(r.stdout)
    if r.returncode: sys.exit(f"failed ({r.returncode}): {' '.join(map(str, cmd))}; see {log}")
    return r.stdout


def rate(seconds, steps):
    "Steps per second of a run: steps / the median of its epochs after the first."
    return steps / statistics.median(seconds[1:])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--work", default="/work/peers/bench_nnunet")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5, help="training steps per epoch")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per run (the first is a warm-up)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of each tool")
    ap.add_argument("--workers", type=int, default=2, help="loader processes of each tool")
    a = ap.parse_args()
    work = Path(a.work); log = work/"train_log.txt"
    pre = work/"nnunet"/"preprocessed"
    pre_ds = next(pre.glob("Dataset*"))
    plans = json.loads((pre_ds/"nnUNetPlans.json").read_text())
    patch_zyx = plans["configurations"]["3d_fullres"]["patch_size"]
    exp = work/"segcook_train"
    if not (exp/"preprocessed").exists():
        shutil.rmtree(exp, ignore_errors=True)
        env0 = {**os.environ, "OMP_NUM_THREADS": "1", "SEGCOOK_QUIET": "1"}
        run([SEGCOOK, "analyze", "--data", a.data, "--exp", str(exp), "--workers", str(a.workers)], env0, log)
        cfg = json.loads((exp/"config.json").read_text())
        cfg["spatial"]["patch_size"] = patch_zyx[::-1]               # nnU-Net's patch, in segcook's (x, y, z) order
        cfg["train"]["batch_size"] = plans["configurations"]["3d_fullres"]["batch_size"]
        (exp/"config.json").write_text(json.dumps(cfg, indent=2))
        run([SEGCOOK, "preprocess", "--exp", str(exp), "--workers", str(a.workers)], env0, log)
        folds = json.loads((exp/"folds.json").read_text())           # no validation cases: epochs are training only
        for f in folds.values(): f["train"] = sorted(set(f["train"]) | set(f.get("val", []))); f["val"] = []
        (exp/"folds.json").write_text(json.dumps(folds, indent=2))
    (work/"peer_train.py").write_text(PEER)
    env_nn = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "nnUNet_raw": str(work/"raw"), "nnUNet_preprocessed": str(pre),
              "nnUNet_results": str(work/"nnunet"/"results_train"), "nnUNet_n_proc_DA": str(a.workers), "nnUNet_compile": "f"}
    env_sc = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "SEGCOOK_QUIET": "1"}
    t = {"nnUNetTrainer": [], "segcook train": []}
    info = {}
    for i in range(a.reps):
        order = list(t) if i % 2 == 0 else list(t)[::-1]
        for k in order:
            if k == "nnUNetTrainer":
                out = run([str(NNUNET_PY), str(work/"peer_train.py"), str(pre_ds), str(a.steps), str(a.epochs), str(a.threads)], env_nn, log)
                res = json.loads(next(l for l in out.splitlines() if l.startswith("RESULT"))[7:])
                info[k] = {kk: res[kk] for kk in ("params", "patch", "batch")}
                t[k].append(rate(res["seconds"], a.steps))
            else:
                shutil.rmtree(exp/"models", ignore_errors=True)
                run([SEGCOOK, "train", "--exp", str(exp), "--folds", "0", "--epochs", str(a.epochs), "--steps-per-epoch", str(a.steps),
                     "--arch", "nnunet", "--overwrite"], env_sc, log)
                rows = list(csv.DictReader(open(exp/"models"/"fold_0"/"log.csv")))
                t[k].append(rate([float(r["seconds"]) for r in rows], a.steps))
                import torch
                sd = torch.load(exp/"models"/"fold_0"/"last.pt", map_location="cpu", weights_only=True)["model"]
                cfg = json.loads((exp/"config.json").read_text())
                info[k] = {"params": sum(v.numel() for v in sd.values()), "patch (x, y, z)": cfg["spatial"]["patch_size"],
                           "batch": cfg["train"]["batch_size"], "deep_supervision": cfg["train"]["deep_supervision"]}
        print(f"rep {i}: " + ", ".join(f"{k} {v[-1]:.3f} steps/s" for k, v in t.items()), f"(load {os.getloadavg()[0]:.2f})", flush=True)
    print(json.dumps(info))
    print("| tool | median steps/s | all steps/s |\n|---|---|---|")
    for k, v in t.items(): print(f"| {k} | {statistics.median(v):.3f} | {', '.join(f'{x:.3f}' for x in v)} |")
    r = [s / n for n, s in zip(t["nnUNetTrainer"], t["segcook train"])]
    print(f"segcook / nnU-Net steps/s, per repetition: {', '.join(f'{x:.2f}' for x in r)}; median {statistics.median(r):.2f}x")


if __name__ == "__main__": main()
