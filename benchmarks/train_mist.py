"""Training steps/s on the CPU, side by side: segcook vs MIST 2.3.0 (same data, patch, batch, threads).

    PYTHONPATH=. .venv/bin/python benchmarks/train_mist.py [--patch 64 64 64] [--batch 2] [--steps 10] [--skip 3] [--rounds 1]

Data: one phantom BraTS dataset (`segcook phantom`, 8 cases 4 x 96x96x80). Each tool runs its own analysis and
preprocessing command line on it (`segcook analyze/preprocess`, `mist_analyze/mist_preprocess`), then trains fold 0
through its own trainer, in its own venv, in a subprocess, one after the other (never concurrently):
  segcook: `segcook.train.train(exp, folds=[0], epochs=1, steps_per_epoch=S, loader="auto", overwrite=True)` (what
           `segcook train` calls); its default loader on this machine is the DALI CPU pipeline with its augmentation
           (DALI threads: its default min(4, cores) = 2); network: the plan's default `nnunet` (plain, no deep supervision).
  MIST:    `Patch3DTrainer(ns).fit()` with `ns` parsed by mist_train's own parser from
           `--patch-size P --batch-size-per-gpu B --epochs 1 --warmup-epochs 0 --folds 0`, i.e. mist_train without its
           post-training inference. MIST has no CLI flag for steps per epoch (max(min_steps_per_epoch=250, cases/batch))
           nor for its loader's worker count, so config.json's training.min_steps_per_epoch is set to S and
           training.hardware.num_cpu_workers to --workers (2, as segcook's DALI threads; MIST's default is 8). On the CPU
           MIST resolves its loader to "generic" (torch DataLoader + its augmentation) and AMP to fp32 itself: nothing in
           it needed CUDA and nothing in MIST was patched. Network: its default `nnunet` (residual, 2 deep-supervision heads).
Both: OMP_NUM_THREADS=1 and torch.set_num_threads(--threads) before training. Timing: each tool's step function
(segcook `segcook.train._step`, MIST `Patch3DTrainer.training_step`) is wrapped to record the clock when it returns; the
interval between two consecutive returns is one whole training iteration (next batch from the loader + forward +
backward + optimiser step). The first --skip intervals (warm-up) are dropped; steps/s = intervals / their total time.
Neither tool's logs have per-step times (segcook's log.csv has per-epoch seconds including validation; MIST logs
losses to tensorboard only), hence the wrappers.

Measured 2026-11-22 on the shared 2-core development machine, defaults (patch 64^3, batch 2, 1 thread, 10 steps, first
3 intervals dropped, 1 round), 16:10-16:19 UTC, 1-min load average 1.9 (segcook run) and 3.0 (MIST run):
  segcook 0.066 steps/s (median step 14.9 s; nnunet 16.55 M params, DALI CPU loader with augmentation)
  MIST    0.061 steps/s (median step 15.6 s; nnunet 16.67 M params, generic loader, 2 workers, augmentation, fp32)
  segcook / MIST = 1.09x.
An earlier run (15:52-16:03, load 5.2 / 3.8) gave 0.031 vs 0.066 (0.47x), but its segcook half overlapped with a smoke
test of benchmarks/pipeline.py started by the same engineer: discard it. One round each, on a machine whose load
moves between 1 and 6 within minutes: the two tools are within noise of each other; use --rounds 3 on a quiet machine.
"""
import argparse, json, os, shutil, subprocess, sys, textwrap, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MIST_BIN = Path(os.environ.get("MIST_BIN", "/work/peers/mist/bin"))
SEGCOOK = Path(sys.executable).parent/"segcook"

SC_TRAIN = textwrap.dedent("""
import json, os, sys, time, torch
torch.set_num_threads({threads})
import segcook.train as T
stamps = []
_step = T._step
def timed(*a, **k):
    out = _step(*a, **k); stamps.append(time.perf_counter()); return out
T._step = timed
T.train({exp!r}, folds=[0], epochs=1, steps_per_epoch={steps}, loader="auto", overwrite=True)
from segcook.train import build_net
from segcook.core import load_plan
net = build_net(load_plan({exp!r} + "/config.json"))
print("STAMPS " + json.dumps({{"stamps": stamps, "params": sum(p.numel() for p in net.parameters()), "torch_threads": torch.get_num_threads()}}))
""")

MIST_TRAIN = textwrap.dedent("""
import json, sys, time, torch
torch.set_num_threads({threads})
from mist.cli.train_entrypoint import _parse_train_args, _create_train_dirs
from mist.training.trainers.patch_3d_trainer import Patch3DTrainer
stamps = []
_ts = Patch3DTrainer.training_step
def timed(self, **k):
    out = _ts(self, **k); stamps.append(time.perf_counter()); return out
Patch3DTrainer.training_step = timed
ns = _parse_train_args({argv!r})
from pathlib import Path
_create_train_dirs(Path(ns.results), False)
tr = Patch3DTrainer(ns)
tr.fit()
net = tr._build_model()
hw = tr.config["training"]["hardware"]
print("STAMPS " + json.dumps({{"stamps": stamps, "params": sum(p.numel() for p in net.parameters()), "torch_threads": torch.get_num_threads(),
      "loader": hw["data_loader"], "amp": tr.config["training"]["amp"], "workers": hw["num_cpu_workers"]}}))
""")


def sh(cmd, log, env):
    "Run `cmd` with output to `log`; exit with the log's tail on failure."
    with open(log, "w") as f: r = subprocess.run([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT, env=env)
    if r.returncode: sys.exit(f"FAILED: {' '.join(map(str, cmd))}\n" + Path(log).read_text()[-4000:])
    return Path(log).read_text()


def env1():
    "Environment for both tools: one OpenMP thread, MIST's bin on PATH, quiet segcook, wide console for MIST's rich."
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PATH": f"{MIST_BIN}:{os.environ['PATH']}",
            "SEGCOOK_QUIET": "1", "COLUMNS": "120", "PYTHONPATH": str(ROOT)}


def prepare(w:Path, a):
    "Phantom data, then each tool's analysis + preprocessing (once)."
    env = env1()
    if not (w/"data/dataset.json").exists():
        sh([SEGCOOK, "phantom", "--out", w/"data", "--cases", a.cases, "--size", *a.size, "--workers", 1], w/"phantom.log", env)
    if not (w/"sc/preprocessed").exists():
        sh([SEGCOOK, "analyze", "--data", w/"data/dataset.json", "--exp", w/"sc", "--nfolds", 4, "--overwrite"], w/"sc_analyze.log", env)
        sh([SEGCOOK, "preprocess", "--exp", w/"sc", "--workers", 1], w/"sc_preprocess.log", env)
    c = json.loads((w/"sc/config.json").read_text())
    c["spatial"]["patch_size"], c["train"]["batch_size"] = list(a.patch), a.batch
    (w/"sc/config.json").write_text(json.dumps(c, indent=2))
    if not (w/"mist/numpy/images").exists():
        sh([MIST_BIN/"mist_analyze", "--data", w/"data/dataset.json", "--results", w/"mist/results", "--nfolds", 4, "--overwrite"], w/"mist_analyze.log", env)
        sh([MIST_BIN/"mist_preprocess", "--results", w/"mist/results", "--numpy", w/"mist/numpy", "--overwrite"], w/"mist_preprocess.log", env)


def mist_config(w:Path, a):
    "Set the two knobs MIST has no CLI flag for (steps per epoch, loader workers) in its config.json."
    p = w/"mist/results/config.json"; c = json.loads(p.read_text())
    c["training"]["min_steps_per_epoch"] = a.steps
    c["training"]["hardware"]["num_cpu_workers"] = a.workers
    p.write_text(json.dumps(c, indent=2))


def rate(stamps, skip):
    "Steady-state steps/s and median step seconds from step-return clock stamps, dropping the first `skip` intervals."
    iv = [b - x for x, b in zip(stamps, stamps[1:])][skip:]
    iv_sorted = sorted(iv)
    return {"steps_per_s": len(iv) / sum(iv), "median_step_s": iv_sorted[len(iv) // 2], "timed_steps": len(iv)}


def run_tool(name, code, py, w, a):
    "Run one tool's training snippet in its venv; its stamps, params and wall seconds."
    t = time.perf_counter(); load = os.getloadavg()[0]
    out = sh([py, "-c", code], w/f"{name}_train.log", env1())
    line = [l for l in out.splitlines() if l.startswith("STAMPS ")][-1]
    r = json.loads(line[7:]); st = r.pop("stamps")
    if len(st) != a.steps: sys.exit(f"{name}: expected {a.steps} steps, recorded {len(st)} (see {w}/{name}_train.log)")
    return {**r, **rate(st, a.skip), "wall_s": time.perf_counter() - t, "load_start": load, "load_end": os.getloadavg()[0]}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default=str(ROOT/"benchmarks/_work/train_mist"))
    p.add_argument("--cases", type=int, default=8); p.add_argument("--size", type=int, nargs=3, default=[96, 96, 80])
    p.add_argument("--patch", type=int, nargs=3, default=[64, 64, 64]); p.add_argument("--batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=10, help="training steps per run (one epoch)")
    p.add_argument("--skip", type=int, default=3, help="warm-up intervals dropped")
    p.add_argument("--threads", type=int, default=1); p.add_argument("--workers", type=int, default=2, help="MIST loader workers")
    p.add_argument("--rounds", type=int, default=1, help="interleaved rounds (segcook, MIST)")
    a = p.parse_args()
    w = Path(a.work); w.mkdir(parents=True, exist_ok=True)
    prepare(w, a); mist_config(w, a)
    margv = ["--results", str(w/"mist/results"), "--numpy", str(w/"mist/numpy"), "--patch-size", *map(str, a.patch),
             "--batch-size-per-gpu", str(a.batch), "--epochs", "1", "--warmup-epochs", "0", "--folds", "0", "--overwrite"]
    rows = {"segcook": [], "MIST 2.3.0": []}
    for k in range(a.rounds):
        rows["segcook"].append(run_tool("segcook", SC_TRAIN.format(threads=a.threads, exp=str(w/"sc"), steps=a.steps), sys.executable, w, a))
        rows["MIST 2.3.0"].append(run_tool("mist", MIST_TRAIN.format(threads=a.threads, argv=margv), MIST_BIN/"python", w, a))
        print(f"round {k + 1}: " + "; ".join(f"{n} {r[-1]['steps_per_s']:.3f} steps/s (load {r[-1]['load_start']:.1f})" for n, r in rows.items()),
              file=sys.stderr, flush=True)
    med = lambda xs: sorted(xs)[len(xs) // 2]
    sc, mi = rows["segcook"], rows["MIST 2.3.0"]
    loads = ", ".join(f"{r['load_start']:.1f}" for r in sc + mi)
    per = lambda rs: ", ".join(f"{r['steps_per_s']:.3f}" for r in rs)
    print(f"\nCPU training, fold 0 of a phantom BraTS dataset ({a.cases} cases 4x{'x'.join(map(str, a.size))}), patch "
          f"{'x'.join(map(str, a.patch))}, batch {a.batch}, {a.threads} torch thread(s), OMP_NUM_THREADS=1, {os.cpu_count()} cores; "
          f"{a.steps} steps per run, first {a.skip} intervals dropped; {a.rounds} round(s); "
          f"1-min load average at each run's start: {loads}\n")
    print("| tool | network (params, M) | loader | steps/s | median step (s) | per-round steps/s |\n|---|---|---|---|---|---|")
    print(f"| segcook | nnunet default ({sc[0]['params'] / 1e6:.2f}) | DALI CPU + augmentation | {med([r['steps_per_s'] for r in sc]):.3f} | "
          f"{med([r['median_step_s'] for r in sc]):.2f} | {per(sc)} |")
    print(f"| MIST 2.3.0 | nnunet default ({mi[0]['params'] / 1e6:.2f}) | {mi[0]['loader']} ({mi[0]['workers']} workers) + augmentation, amp={mi[0]['amp']} | "
          f"{med([r['steps_per_s'] for r in mi]):.3f} | {med([r['median_step_s'] for r in mi]):.2f} | {per(mi)} |")
    ratio = med([s["steps_per_s"] / m["steps_per_s"] for s, m in zip(sc, mi)])
    print(f"\nsegcook / MIST steps/s (median of per-round ratios): **{ratio:.2f}x**")
    print(json.dumps({"segcook": sc, "mist": mi, "ratio": ratio}), file=open(w/"result.json", "w"))


if __name__ == "__main__": main()
