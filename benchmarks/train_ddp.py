"""Training throughput on the CPU: 1 process vs 2 gloo DDP processes at the same global batch.

    .venv/bin/python benchmarks/train_ddp.py [--steps 10] [--batch 4]

One process with batch B (torch threads = cores) against two gloo processes with B/2 each (one thread
each), both on the global-batch loader (no augmentation), nnU-Net base 8 on 32^3 patches of a phantom
BraTS experiment, no validation. Reports optimisation steps per second (second epoch, warm), plus
one process limited to one thread (how much of the gain is thread contention rather than DDP).

Measured 2026-11-22 on the shared 2-core development machine (load average ~3.5 from other work):
global batch 4, steps/s: 1 process (2 threads) 0.26, 1 process (1 thread) 2.17, 2 gloo processes
(1 thread each) 2.08. On a busy machine torch's intra-op threads spin against other work (8x slower);
with one thread per process, 2 DDP processes match 1 process: there is about one free core.
An earlier run at load ~3.0 gave 0.75 / - / 2.09. Re-measure on an idle machine before quoting a ratio.
"""
import argparse, csv, json, os, shutil, tempfile
from pathlib import Path


def run(exp, procs, bs, steps):
    from segcook.train import train
    train(exp, folds=[0], procs=procs, batch_size=bs, epochs=2, steps_per_epoch=steps, loader="global", overwrite=True)
    rows = list(csv.DictReader(open(Path(exp)/"models/fold_0/log.csv")))
    return steps / float(rows[-1]["seconds"])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=10); p.add_argument("--batch", type=int, default=4)
    a = p.parse_args()
    os.environ.setdefault("SEGCOOK_QUIET", "1")
    from segcook.train import toy_experiment
    tmp = Path(tempfile.mkdtemp())
    exp = toy_experiment(tmp/"exp", cases=6, size=(64, 64, 48), patch=(32, 32, 32), nfolds=3, val_fraction=0, arch_kwargs={"base": 8})
    import torch
    one = run(exp, 1, a.batch, a.steps)
    threads = torch.get_num_threads(); torch.set_num_threads(1)
    one_1t = run(exp, 1, a.batch, a.steps)
    torch.set_num_threads(threads)
    two = run(exp, 2, a.batch // 2, a.steps)
    print(json.dumps({"global_batch": a.batch, "steps_per_s_1proc": round(one, 3), "steps_per_s_1proc_1thread": round(one_1t, 3),
                      "steps_per_s_2procs": round(two, 3), "ratio_2procs_over_1proc": round(two / one, 2),
                      "cores": os.cpu_count(), "load_avg_1min": os.getloadavg()[0]}))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__": main()
