"""FLARE-style efficiency of one abdominal case on CPU, in one run: `segcook predict` (default mode: 8 TTA passes),
`segcook predict --fast` (no TTA, argmax of logits, torch resampling) and nnU-Net v2's `nnUNetPredictor` (2.8.1;
`use_mirroring=False`, `perform_everything_on_device=False`), interleaved repetitions.

Every command is a whole process (imports, reading the NIfTI, preprocessing, sliding window, resampling, writing).
Its wall time and its memory-time area come from one sampler for all three: `segcook.inference.MemoryCurve` (fixed
interval, trapezoid area), here reading the resident memory (RSS) of the command's whole process tree (nnU-Net's
predictor starts worker processes) from /proc. The in-process time of the case alone is listed next to them:
segcook's `timing.csv` (with its own memory-time area), nnU-Net's `predict_from_files` call (its worker processes
included).

Same case, same network: an `abdomen_ct` phantom case (HU, 10 organs); segcook's `nnunet` architecture at width
`--base` with the topology `segcook.nets.get_topology` gives for `--patch` (trained one step: speed does not depend on
the weights); nnU-Net's plan for the same data (`nnUNetv2_extract_fingerprint` + `nnUNetv2_plan_experiment`) with its
patch, spacing and PlainConvUNet stages set to the same widths, kernels and strides (the parameter counts are printed).

Needs the peer venv of benchmarks/nnunet.py (/work/peers/nnunet, nnunetv2 2.8.1; NNUNET_BIN to change). Run:
    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python benchmarks/efficiency.py --work /work/peers/bench_eff --reps 3
"""
import argparse, csv, json, os, shutil, statistics, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
NNUNET_BIN = Path(os.environ.get("NNUNET_BIN", "/work/peers/nnunet/bin"))
SEGCOOK = str(Path(sys.executable).parent/"segcook")
from segcook.inference import MemoryCurve

PEER = r'''
import sys, json, time, torch
from pathlib import Path
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
plans_file, raw, image, out, threads = sys.argv[1:6]

def main():
    torch.set_num_threads(int(threads))
    pm = PlansManager(json.loads(Path(plans_file).read_text()))
    cm = pm.get_configuration("3d_fullres")
    dsj = json.loads((Path(raw)/"dataset.json").read_text())
    net = get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs, cm.network_arch_init_kwargs_req_import,
                                 len(dsj["channel_names"]), len(dsj["labels"]), allow_init=True, deep_supervision=False)
    print("nnunet params", sum(p.numel() for p in net.parameters()), "patch", cm.patch_size, flush=True)
    p = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False, perform_everything_on_device=False,
                        device=torch.device("cpu"), verbose=False, verbose_preprocessing=False, allow_tqdm=False)
    p.manual_initialization(net, pm, cm, [net.state_dict()], dsj, "nnUNetTrainer", None)
    t0 = time.perf_counter()
    p.predict_from_files([[image]], [str(Path(out)/"case")], save_probabilities=False, overwrite=True,
                         num_processes_preprocessing=1, num_processes_segmentation_export=1)
    print(f"nnunet case s {time.perf_counter() - t0:.3f}", flush=True)

if __name__ == "__main__": main()   # nnU-Net's workers start with spawn
'''


def _tree(pid:int) -> list[int]:
    "pid and all its descendants (from /proc/<pid>/task/*/children)."
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f: todo += [int(c) for c in f.read().split()]
        except OSError: pass
    return out


def _rss_mib(pid:int) -> float:
    try:
        with open(f"/proc/{pid}/statm") as f: return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, IndexError, ValueError): return 0.0


class TreeMemory(MemoryCurve):
    "segcook's memory-time sampler on the RSS of a process and its descendants (not of this process)."
    def __init__(self, pid:int, interval:float=0.05):
        super().__init__(None, interval)
        self.pid, self.source = pid, "rss(tree)"
    def _now(self) -> float: return sum(_rss_mib(p) for p in _tree(self.pid))


def measured(cmd, env, log, interval):
    "Run `cmd`, sampling its process tree: (wall s, area MiB s, peak MiB)."
    with open(log, "a") as f:
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
        with TreeMemory(p.pid, interval) as mc: rc = p.wait()
    if rc: sys.exit(f"failed ({rc}): {' '.join(map(str, cmd))}; see {log}")
    return mc.seconds, mc.area_mib_s, mc.peak_mib


def setup(work:Path, a):
    "The phantom, the segcook experiment (trained one step) and nnU-Net's raw dataset and plan, once."
    from segcook.data import make_phantom, load_dataset
    from segcook.analysis import analyze
    from segcook.preprocess import preprocess
    from segcook.train import train
    from segcook.nets import get_topology
    from segcook.core import load_plan
    dj = make_phantom(work/"data", cases=2, kind="abdomen_ct", size=a.size, spacing=a.spacing, seed=0)
    ds = load_dataset(dj)
    exp = work/"segcook"
    if not (exp/"models"/"fold_0"/"best.pt").exists():
        if not (exp/"config.json").exists(): analyze(dj, exp, nfolds=2, workers=1, patch_size=list(a.patch), target_spacing=list(a.spacing))
        preprocess(exp, workers=1)
        train(exp, folds=[0], epochs=1, steps_per_epoch=1, arch="nnunet", arch_kwargs={"base": a.base}, loader="global", overwrite=True)
    import torch
    ck = torch.load(exp/"models"/"fold_0"/"best.pt", map_location="cpu", weights_only=False)["plan"]   # the network predict loads
    case = ds.cases()[0]
    raw = work/"raw"/"Dataset502_abdomen"
    if not (raw/"dataset.json").exists():
        (raw/"imagesTr").mkdir(parents=True, exist_ok=True)
        (raw/"labelsTr").mkdir(exist_ok=True)
        for c in ds.cases():
            shutil.copyfile(c.images["ct"], raw/"imagesTr"/f"{c.id}_0000.nii.gz")
            shutil.copyfile(c.label, raw/"labelsTr"/f"{c.id}.nii.gz")
        (raw/"dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0, **dict(ds.label_names)},
                                                    "numTraining": len(ds.cases()), "file_ending": ".nii.gz"}, indent=2))
    env = {**os.environ, "nnUNet_raw": str(work/"raw"), "nnUNet_preprocessed": str(work/"nnunet_pre"), "nnUNet_results": str(work/"nnunet_res"),
           "OMP_NUM_THREADS": "1"}
    plans = work/"nnunet_pre"/raw.name/"nnUNetPlans.json"
    if not plans.exists():
        for c in (["nnUNetv2_extract_fingerprint", "-d", "502", "-np", "1"], ["nnUNetv2_plan_experiment", "-d", "502"]):
            subprocess.run([str(NNUNET_BIN/c[0]), *c[1:]], check=True, env=env, stdout=subprocess.DEVNULL)
    nn = json.loads(plans.read_text())
    cfg = nn["configurations"]["3d_fullres"]
    kw, patch, spacing = ck["train"]["arch_kwargs"], ck["spatial"]["patch_size"], ck["spatial"]["target_spacing"]
    k, s = get_topology(patch, spacing, kw.get("max_pools", 5))
    widths = [min(kw.get("base", 32)*2**i, kw.get("max_width", 320)) for i in range(len(s))]
    ak = cfg["architecture"]["arch_kwargs"]
    ak.update(n_stages=len(s), features_per_stage=widths, kernel_sizes=[list(x)[::-1] for x in k], strides=[list(x)[::-1] for x in s],
              n_conv_per_stage=[2]*len(s), n_conv_per_stage_decoder=[2]*(len(s) - 1))
    cfg["patch_size"], cfg["spacing"] = list(patch)[::-1], list(spacing)[::-1]
    (work/"plans_same_net.json").write_text(json.dumps(nn, indent=1))
    with open(work/"one.csv", "w", newline="") as f: csv.writer(f).writerows([["id", "ct"], [case.id, str(case.images["ct"])]])
    (work/"peer.py").write_text(PEER)
    return exp, case, raw


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/work/peers/bench_eff")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch / OMP threads of every command")
    ap.add_argument("--size", type=int, nargs=3, default=[80, 80, 64], help="phantom voxels (x, y, z)")
    ap.add_argument("--spacing", type=float, nargs=3, default=[1.5, 1.5, 1.5])
    ap.add_argument("--patch", type=int, nargs=3, default=[64, 64, 64])
    ap.add_argument("--base", type=int, default=16, help="width of the first stage (both networks)")
    ap.add_argument("--interval", type=float, default=0.05, help="memory sampling interval, s")
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    exp, case, raw = setup(work, a)
    import torch
    from segcook.inference import load_models
    net = load_models(exp, [0], "cpu")[0][0]          # what `segcook predict` runs (the checkpoint's plan, not config.json's)
    n_sc = sum(p.numel() for p in net.parameters())
    print(f"case {case.id} {a.size} voxels of {a.spacing} mm; segcook params {n_sc}, widths {[next(c for c in st.modules() if isinstance(c, torch.nn.Conv3d)).out_channels for st in net.encoder]}", flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "SEGCOOK_QUIET": "1"}
    log = work/"log.txt"
    cmds = {"segcook predict (default, TTA)": [], "segcook predict --fast": [], "nnUNetPredictor (no TTA)": []}
    rows = []
    for i in range(a.reps):
        for k in cmds:
            out = work/"pred"/"".join(ch if ch.isalnum() else "_" for ch in k)
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            if k.startswith("nnU"): cmd = [str(NNUNET_BIN/"python"), str(work/"peer.py"), str(work/"plans_same_net.json"), str(raw), str(case.images["ct"]), str(out), str(a.threads)]
            else: cmd = [SEGCOOK, "predict", "--exp", str(exp), "--input", str(work/"one.csv"), "--out", str(out), "--folds", "0", "--device", "cpu", *(["--fast"] if "fast" in k else [])]
            load = os.getloadavg()[0]
            wall, area, peak = measured(cmd, env, log, a.interval)
            r = {"rep": i, "command": k, "wall_s": wall, "area_mib_s": area, "peak_mib": peak, "load": load}
            if k.startswith("nnU"): r["case_s"] = float([l for l in open(log) if l.startswith("nnunet case s")][-1].split()[-1])
            else:
                t = next(csv.DictReader(open(out/"timing.csv")))
                r.update(case_s=float(t["seconds"]), case_area_mib_s=float(t["mem_area_mib_s"]), tta_passes=int(t["tta_passes"]))
            rows.append(r)
            print(f"rep {i} {k}: {wall:.1f} s, {area:.0f} MiB s, peak {peak:.0f} MiB (load {load:.2f})", flush=True)
    with open(work/"efficiency.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["rep", "command", "wall_s", "area_mib_s", "peak_mib", "load", "case_s", "case_area_mib_s", "tta_passes"])
        w.writeheader()
        w.writerows(rows)
    med = lambda k, f: statistics.median(r[f] for r in rows if r["command"] == k)
    every = lambda k, f, fmt: ", ".join(format(r[f], fmt) for r in rows if r["command"] == k)
    print("\n| command | wall s, median (all) | memory-time area MiB s, median (all) | peak RSS MiB | in-process case s (all) / segcook's case area |")
    print("|---|---|---|---|---|")
    for k in cmds:
        own = f"{med(k, 'case_s'):.1f} ({every(k, 'case_s', '.1f')})" + (f" / {med(k, 'case_area_mib_s'):,.0f}" if not k.startswith("nnU") else "")
        print(f"| {k} | {med(k, 'wall_s'):.1f} ({every(k, 'wall_s', '.1f')}) | {med(k, 'area_mib_s'):,.0f} ({every(k, 'area_mib_s', ',.0f')}) "
              f"| {med(k, 'peak_mib'):.0f} | {own} |")
    print("load average (1 min) at each command:", ", ".join(f"{r['load']:.2f}" for r in rows))
    nn = [l for l in open(log) if l.startswith("nnunet params")]
    print(f"parameters: segcook {n_sc:,}; nnU-Net {nn[-1].split()[2] if nn else '?'} ({nn[-1].strip() if nn else 'no log line'})")


if __name__ == "__main__": main()
