"`segcook sweep`: real papermill runs through the local engine and a real Slurm cluster (tools/slurm.sh)."
import json, os, shutil, signal, subprocess, sys, time
from pathlib import Path
import nbformat
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
SEGCOOK = str(Path(sys.executable).parent/"segcook")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "SEGCOOK_QUIET": "1"}


def probe_recipe(path, sleep_s=0.0):
    "A recipe that records what the engine gave it (threads, GPUs, Slurm job) and fails when x < 0."
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "python3", "language": "python"}
    p = nbformat.v4.new_code_cell("x = 1      # a number\nseed = 0   # seed\ngpus = 0   # GPUs\nexp = None # experiment folder")
    p.metadata["tags"] = ["parameters"]
    body = ("import os, time\nfrom pathlib import Path\nfrom segcook.sweep import record\n"
            f"t0 = time.time(); time.sleep({sleep_s})\n"
            "if x < 0: raise ValueError(f'x must be >= 0, got {x}')\n"
            "Path(exp).mkdir(parents=True)\n"
            "record(score=10 * x + seed, gpus=gpus, cuda=os.environ.get('CUDA_VISIBLE_DEVICES', ''),\n"
            "       omp=os.environ.get('OMP_NUM_THREADS', ''), job=os.environ.get('SLURM_ARRAY_JOB_ID', ''),\n"
            "       start=t0, end=time.time())")
    nb.cells = [p, nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, str(path))
    return Path(path)


def spec(tmp, grid, **kw):
    s = {"recipe": "probe.ipynb", "grid": grid, **kw}
    (tmp/"sweep.yaml").write_text(json.dumps(s))
    return tmp/"sweep.yaml"


def sweep(*args, env=None, timeout=900):
    return subprocess.run([SEGCOOK, "sweep", *map(str, args)], capture_output=True, text=True, env=env or ENV, timeout=timeout)


def test_bad_specs_are_named(tmp_path):
    "Unknown parameter (read from the recipe's parameters cell), empty grid, bad resource: exit 2 and what to fix."
    brats = REPO/"recipes"/"brats.ipynb"
    cases = [({"recipe": str(brats), "grid": {"lr": [1e-3]}}, "brats.ipynb has no parameter(s) ['lr']; its parameters: ['data', 'exp'"),
             ({"recipe": str(brats), "grid": {"arch": []}}, "grid axis 'arch' has no values"),
             ({"recipe": str(brats), "grid": {}}, "the grid is empty"),
             ({"recipe": str(brats), "grid": {"arch": ["unet"]}, "resources": {"gpus": -2}}, "resources.gpus: -2 is not allowed"),
             ({"recipe": str(brats), "grid": {"arch": ["unet"]}, "resources": {"time_min": "tomorrow"}}, "time_min must be minutes"),
             ({"recipe": "nope.ipynb", "grid": {"arch": ["unet"]}}, "recipe notebook not found")]
    for i, (s, msg) in enumerate(cases):
        f = tmp_path/f"s{i}.yaml"; f.write_text(json.dumps(s))
        r = sweep("run", f, "--out", tmp_path/f"o{i}")
        assert r.returncode == 2 and msg in r.stderr, (s, r.stderr)
        assert "Traceback" not in r.stderr
        assert not (tmp_path/f"o{i}").exists()            # nothing is created for a spec that does not validate
    (tmp_path/"bad.yaml").write_text("recipe: [unclosed")
    r = sweep("run", tmp_path/"bad.yaml", "--out", tmp_path/"o")
    assert r.returncode == 2 and "not valid YAML/JSON" in r.stderr


def test_local_engine_failure_gpus_threads(tmp_path):
    """A failing run is reported with its cell and log and does not stop the others; each run gets its
    own GPUs (CUDA_VISIBLE_DEVICES partitioned, here over 4 device ids of a pretend GPU node: the probe
    recipe never touches CUDA) and its share of the CPU threads; `rerun --failed` retries only the failure."""
    probe_recipe(tmp_path/"probe.ipynb", sleep_s=1.5)
    f = spec(tmp_path, {"x": [1, 2, 3, -1]}, resources={"gpus": 2})
    out = tmp_path/"out"
    r = sweep("run", f, "--out", out, "--max-parallel", 2, env={**ENV, "CUDA_VISIBLE_DEVICES": "0,1,2,3"})
    assert r.returncode == 1, r.stderr
    assert "3 done, 1 failed" in r.stdout
    failed = next((out/"runs").glob("x--1-*"))
    assert f"FAILED {failed.name} in cell 3: ValueError: x must be >= 0, got -1" in r.stderr   # In [3]: after papermill's injected cell
    assert f"log: {failed/'log.txt'}" in r.stderr and (failed/"log.txt").exists()
    df = pd.read_csv(out/"results.csv")
    ok = df[df.state == "done"]
    assert sorted(ok.x) == [1, 2, 3] and sorted(ok.score) == [10, 20, 30]
    assert set(ok.gpus) == {2}                                                   # resources.gpus reaches the recipe's `gpus`
    gpus = [set(map(int, str(c).split(","))) for c in ok.cuda]
    assert all(len(g) == 2 and g <= {0, 1, 2, 3} for g in gpus)
    spans = list(zip(ok.start, ok.end, gpus))
    overlapping = [(a, b) for i, a in enumerate(spans) for b in spans[i+1:] if a[0] < b[1] and b[0] < a[1]]
    assert overlapping                                                           # two ran at once ...
    assert all(not (a[2] & b[2]) for a, b in overlapping)                        # ... on different GPUs
    assert set(ok.omp.astype(int)) == {max(1, os.cpu_count() // 2)}       # cores split between 2 parallel runs
    st = sweep("status", out)
    assert st.returncode == 0 and "failed" in st.stdout and "1/4 done" not in st.stdout and "3/4 done" in st.stdout
    before = {d.name: (d/"done.json").stat().st_mtime_ns for d in (out/"runs").iterdir() if (d/"done.json").exists()}
    r2 = sweep("rerun", out, "--failed", env={**ENV, "CUDA_VISIBLE_DEVICES": "0,1,2,3"})
    assert r2.returncode == 1 and (failed/"failed.1.json").exists() and (failed/"failed.json").exists()
    assert (failed/"log.1.txt").exists()                                         # the first attempt's log is kept
    assert before == {d.name: (d/"done.json").stat().st_mtime_ns for d in (out/"runs").iterdir() if (d/"done.json").exists()}


def _slurm_up() -> bool:
    if not shutil.which("sbatch"): return False
    r = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    return r.returncode == 0 and any(s in r.stdout for s in ("idle", "mix", "alloc"))


slurm = pytest.mark.skipif(not _slurm_up() and os.environ.get("SEGCOOK_REQUIRE_SLURM") != "1",
                           reason="no Slurm cluster here (tools/slurm.sh starts one; .ci/run does)")


@slurm
def test_slurm_engine(tmp_path):
    """A real 4-run sweep through submitit on the local Slurm cluster: one job array; killing the sweep
    process while its jobs are queued or running, then running it again, waits for those jobs instead of
    submitting them twice; the collected table has every run."""
    probe_recipe(tmp_path/"probe.ipynb", sleep_s=1.0)
    f = spec(tmp_path, {"x": [1, 2]}, seeds=[0, 1], resources={"cpus": 1, "mem_gb": 1, "time_min": 10})
    out = tmp_path/"out"
    p = subprocess.Popen([SEGCOOK, "sweep", "run", str(f), "--out", str(out), "--engine", "slurm", "--max-parallel", "2"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV, start_new_session=True)
    first = p.stdout.readline() + p.stdout.readline()
    assert "submitted 4 run(s) as Slurm job array" in first, first
    os.killpg(p.pid, signal.SIGKILL); p.wait()
    r = sweep("run", f, "--out", out, "--engine", "slurm", timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "submitted" not in r.stdout                                           # nothing was submitted twice
    df = pd.read_csv(out/"results.csv")
    assert len(df) == 4 and set(df.state) == {"done"} and sorted(df.score) == [10, 11, 20, 21]
    jobs = set(df.job.astype(str))
    assert len(jobs) == 1 and jobs != {"nan"}                                    # all four tasks of one array job
    array = jobs.pop()
    assert {p.name for p in (out/"slurm").glob(f"{array}_*")} == {f"{array}_{i}" for i in range(4)}   # one task each, once


@slurm
def test_slurm_failure_shows_cell(tmp_path):
    "A failing array task: the sweep says which run, which cell, and where the log is; the others finish."
    probe_recipe(tmp_path/"probe.ipynb")
    f = spec(tmp_path, {"x": [-1, 1]}, resources={"cpus": 1, "mem_gb": 1})
    out = tmp_path/"out"
    r = sweep("run", f, "--out", out, "--engine", "slurm", timeout=600)
    assert r.returncode == 1 and "1 done, 1 failed" in r.stdout, r.stdout + r.stderr
    assert "in cell 3: ValueError: x must be >= 0, got -1" in r.stderr and "log: " in r.stderr


@pytest.mark.slow
def test_brats_sweep_local_resume(tmp_path):
    """`segcook sweep run recipes/sweep_brats.yaml` (the BraTS recipe in smoke mode, 2 architectures x 2 folds):
    stopped after its first finished run, run again: only the missing runs execute; results.csv has one row
    per run with the recorded out-of-fold Dice."""
    out = tmp_path/"sw"
    cmd = [SEGCOOK, "sweep", "run", str(REPO/"recipes"/"sweep_brats.yaml"), "--out", str(out), "--max-parallel", "2"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    t0 = time.time()
    while not list(out.glob("runs/*/done.json")) and time.time() - t0 < 600: time.sleep(0.5)
    p.send_signal(signal.SIGTERM)
    log = p.communicate(timeout=120)[0]
    assert p.returncode == 130, log
    done = {d.parent.name: d.stat().st_mtime_ns for d in out.glob("runs/*/done.json")}
    assert 1 <= len(done) < 4, log
    assert not list(out.glob("runs/*/failed.json"))                             # a stopped run is not a failure
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{4 - len(done)} to run" in r.stdout
    assert done == {n: t for n, t in ((d.parent.name, d.stat().st_mtime_ns) for d in out.glob("runs/*/done.json")) if n in done}
    df = pd.read_csv(out/"results.csv")
    assert len(df) == 4 and set(df.state) == {"done"}
    assert sorted(df.arch) == ["nnunet", "nnunet", "unet", "unet"] and sorted(df.folds) == ["[0]", "[0]", "[1]", "[1]"]
    assert df.oof_WT_dice.between(0, 1).all() and (df.oof_cases == 3).all()
    assert (out/"figures"/"oof_WT_dice.png").stat().st_size > 1000
    nb = json.loads(next(out.glob("runs/*/out.ipynb")).read_text())
    assert any(o.get("output_type") == "display_data" for c in nb["cells"] for o in c.get("outputs", []))


@pytest.mark.slow
@slurm
def test_brats_sweep_slurm(tmp_path):
    "The same example sweep on the local Slurm cluster finishes and collects the same table."
    out = tmp_path/"sw"
    r = sweep("run", REPO/"recipes"/"sweep_brats.yaml", "--out", out, "--engine", "slurm", "--max-parallel", "2", timeout=1200)
    assert r.returncode == 0, r.stdout + r.stderr
    df = pd.read_csv(out/"results.csv")
    assert len(df) == 4 and set(df.state) == {"done"} and df.oof_WT_dice.between(0, 1).all()


@slurm
def test_train_nodes_srun_torchrun(tmp_path):
    """Inside a real Slurm job (submitted like a multi-node run: the function runs once, not under srun),
    `train_nodes` starts `srun` + `torchrun` with the job's rendezvous: 2 gloo ranks train one fold."""
    import submitit
    from segcook.train import toy_experiment, load_checkpoint
    from segcook.sweep import train_nodes
    exp = toy_experiment(tmp_path/"exp", cases=4, size=(24, 24, 16), patch=(16, 16, 16), nfolds=2, val_fraction=0.5,
                         epochs=1, steps_per_epoch=1, batch_size=2, arch_kwargs={"base": 4})
    ex = submitit.SlurmExecutor(folder=tmp_path/"slurm", python=sys.executable)
    ex.update_parameters(nodes=1, ntasks_per_node=1, cpus_per_task=2, mem="2000M", time=10, use_srun=False)
    job = ex.submit(train_nodes, str(exp), torchrun=True, procs=2, folds=[0], epochs=1, steps_per_epoch=1, loader="global")
    scores = job.result()
    assert list(scores) == [0] and 0 <= scores[0] <= 1
    ck = load_checkpoint(exp/"models"/"fold_0"/"last.pt")
    assert ck["run"]["world_size"] == 2
    assert "srun --nodes=1" in Path(job.paths.stderr).read_text() + Path(job.paths.stdout).read_text()


def test_recipe_parameters_agree_with_papermill():
    "Our reading of the parameters cell (ast) gives papermill's names, defaults and help texts, for every recipe."
    from papermill import inspect_notebook
    from segcook.sweep import recipe_parameters
    for nb in sorted((REPO/"recipes").glob("*.ipynb")):
        ours, theirs = recipe_parameters(nb), inspect_notebook(str(nb))
        assert list(ours) == list(theirs), nb
        for k, v in theirs.items(): assert (ours[k]["default"], ours[k]["help"]) == (v["default"], v["help"]), (nb, k)
