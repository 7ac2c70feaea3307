"""The cost of the sweep machinery per run: `segcook sweep run` of a one-run spec vs a bare papermill run
of the same notebook with the same parameters, interleaved, several repetitions (wall seconds).

    PYTHONPATH=. .venv/bin/python benchmarks/sweep.py --reps 5                 # probe notebook: local (+ Slurm if up)
    PYTHONPATH=. .venv/bin/python benchmarks/sweep.py --reps 3 --brats         # also recipes/brats.ipynb in smoke mode

The probe notebook does almost nothing, so its times are the fixed costs (interpreter + papermill start,
kernel start, spec validation, run folder, collect). Slurm needs a cluster (tools/slurm.sh starts a local one).
"""
import argparse, json, os, shutil, statistics, subprocess, sys, tempfile, time
from pathlib import Path
import nbformat

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def probe(path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "python3", "language": "python"}
    p = nbformat.v4.new_code_cell("x = 1      # a number\nexp = None # experiment folder")
    p.metadata["tags"] = ["parameters"]
    nb.cells = [p, nbformat.v4.new_code_cell("from segcook.sweep import record\nrecord(score=2 * x)")]
    nbformat.write(nb, str(path))
    return path


def timed(cmd, env):
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    dt = time.perf_counter() - t0
    if r.returncode != 0: raise SystemExit(f"failed: {' '.join(map(str, cmd))}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return dt


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--brats", action="store_true", help="also the BraTS recipe in smoke mode (about a minute a run)")
    ap.add_argument("--no-slurm", action="store_true")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_sweep_"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SEGCOOK_QUIET": "1"}
    slurm = not a.no_slurm and shutil.which("sbatch") is not None
    cases = [("probe", probe(tmp/"probe.ipynb"), {"x": 1})]
    if a.brats: cases.append(("brats smoke", REPO/"recipes"/"brats.ipynb", {"smoke": True}))
    rows = []
    for name, nb, params in cases:
        spec = tmp/f"{nb.stem}.yaml"
        spec.write_text(json.dumps({"recipe": str(nb), "runs": [params], "resources": {"cpus": 1, "mem_gb": 2}}))
        pm = [str(BIN/"papermill"), str(nb), str(tmp/"bare.ipynb"), "--cwd", str(nb.parent), "--no-progress-bar",
              "-p", "exp", str(tmp/"bare_exp")] + [x for k, v in params.items() for x in ("-p", k, str(v))]
        t = {"papermill": [], "sweep local": [], **({"sweep slurm": []} if slurm else {})}
        for i in range(a.reps):
            for kind in t:
                for d in ("bare_exp", "bare_exp_data", "sw"): shutil.rmtree(tmp/d, ignore_errors=True)
                cmd = pm if kind == "papermill" else [str(BIN/"segcook"), "sweep", "run", str(spec), "--out", str(tmp/"sw"),
                                                      "--engine", kind.split()[1]]
                t[kind].append(timed(cmd, env))
            print(name, i, {k: round(v[-1], 2) for k, v in t.items()}, flush=True)
        base = statistics.median(t["papermill"])
        for kind, v in t.items():
            rows.append((name, kind, statistics.median(v), min(v), max(v), statistics.median(v) - base, v))
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}; {os.cpu_count()} cores")
    print("| notebook | how | median s | min s | max s | overhead vs papermill (median) | all repetitions (s) |")
    print("|---|---|---|---|---|---|---|")
    for n, k, med, lo, hi, ov, v in rows:
        print(f"| {n} | {k} | {med:.2f} | {lo:.2f} | {hi:.2f} | {ov:+.2f} s | {', '.join(f'{x:.2f}' for x in v)} |")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__": main()
