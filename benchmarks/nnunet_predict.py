"""CPU inference of one case, side by side with nnU-Net v2's predictor (2.8.1), whole commands (reading the
NIfTI files, preprocessing the case, sliding window, resampling back, writing), interleaved repetitions.

- nnU-Net: `nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False, device=cpu,
  perform_everything_on_device=False)`, network = the PlainConvUNet of its own 3d_fullres plan (random weights:
  speed does not depend on them), `predict_from_files` on the case's 4 channel files.
- segcook: `segcook predict --fast` (no TTA, argmax of logits, torch resampling) and `segcook predict --no-tta`
  (default mode without flips), same patch as nnU-Net's plan, tile overlap 0.5, `nnunet` architecture trained
  for one step (weights do not change the speed).

With `--device cuda` both run on the GPU (nnU-Net: `perform_everything_on_device=True`); with `--tta` also nnU-Net with
mirroring (8 passes) against segcook's default mode (8 flips).

Needs the folders made by benchmarks/nnunet.py (same --work) and its peer venv. Run:
    PYTHONPATH=. .venv/bin/python benchmarks/nnunet_predict.py --data /work/peers/data/ph8/dataset.json --reps 3
"""
import argparse, csv, json, os, shutil, statistics, subprocess, sys, time
from pathlib import Path

NNUNET_PY = Path(os.environ.get("NNUNET_BIN", "/work/peers/nnunet/bin"))/"python"
SEGCOOK = os.environ.get("SEGCOOK_BIN", str(Path(sys.executable).parent/"segcook"))   # the segcook command

PEER = r'''
import sys, json, torch
from pathlib import Path
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
pre, raw, case, out = map(Path, sys.argv[1:5])

def main():
    torch.set_num_threads(int(sys.argv[5]))
    plans = json.loads(next(pre.glob("*/nnUNetPlans.json")).read_text())
    dsj = json.loads((raw/"dataset.json").read_text())
    pm = PlansManager(plans); cm = pm.get_configuration("3d_fullres")
    nin, nout = len(dsj["channel_names"]), len(dsj["labels"])
    net = get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs, cm.network_arch_init_kwargs_req_import,
                                 nin, nout, allow_init=True, deep_supervision=False)
    print("nnunet params", sum(p.numel() for p in net.parameters()), "patch", cm.patch_size, flush=True)
    dev, mirror = torch.device(sys.argv[6]), sys.argv[7] == "1"
    p = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=mirror, perform_everything_on_device=dev.type == "cuda",
                        device=dev, verbose=False, verbose_preprocessing=False, allow_tqdm=False)
    p.manual_initialization(net, pm, cm, [net.state_dict()], dsj, "nnUNetTrainer", None)
    files = [str(raw/"imagesTr"/f"{case}_{i:04d}.nii.gz") for i in range(nin)]
    p.predict_from_files([files], [str(out/case)], save_probabilities=False, overwrite=True,
                         num_processes_preprocessing=1, num_processes_segmentation_export=1)

if __name__ == "__main__": main()   # nnU-Net's preprocessing workers start with spawn
'''


def timed(cmd, env, log):
    t0 = time.perf_counter()
    with open(log, "a") as f: r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    if r.returncode: sys.exit(f"failed: {' '.join(map(str, cmd))}; see {log}")
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--work", default="/work/peers/bench_nnunet")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu, or cuda (nnU-Net then keeps everything on the GPU)")
    ap.add_argument("--tta", action="store_true", help="also: nnU-Net with mirroring vs segcook's default mode (8 flips each)")
    a = ap.parse_args()
    work = Path(a.work); log = work/"predict_log.txt"
    raw = next((work/"raw").glob("Dataset*"))
    pre = work/"nnunet"/"preprocessed"
    plans = json.loads(next(pre.glob("*/nnUNetPlans.json")).read_text())
    patch_zyx = plans["configurations"]["3d_fullres"]["patch_size"]
    exp = work/"segcook"
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "SEGCOOK_QUIET": "1"}
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from segcook.data import load_dataset
    case = load_dataset(a.data).cases()[0]
    if not (exp/"models"/"fold_0"/"best.pt").exists():
        cfg = json.loads((exp/"config.json").read_text())
        cfg["spatial"]["patch_size"] = patch_zyx[::-1]                # nnU-Net's patch, in segcook's (x, y, z) order
        (exp/"config.json").write_text(json.dumps(cfg, indent=2))
        timed([SEGCOOK, "train", "--exp", str(exp), "--folds", "0", "--epochs", "1", "--steps-per-epoch", "1", "--arch", "nnunet",
               *(["--gpus", "1"] if a.device == "cuda" else [])], env, log)
    import torch
    sd = torch.load(exp/"models"/"fold_0"/"best.pt", map_location="cpu", weights_only=True)["model"]
    print("segcook params", sum(v.numel() for v in sd.values()), "patch (x, y, z)", json.loads((exp/"config.json").read_text())["spatial"]["patch_size"])
    # the case's files under other names (hard links): segcook predict must read and preprocess them, as nnU-Net does,
    # not take the arrays `segcook preprocess` left in the experiment for this training case
    inp = work/"input"; shutil.rmtree(inp, ignore_errors=True); inp.mkdir(parents=True)
    names = list(case.images)
    for n in names: os.link(case.images[n], inp/Path(case.images[n]).name)
    with open(work/"one.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", *names]); w.writerow([case.id, *[str(inp/Path(case.images[n]).name) for n in names]])
    (work/"peer.py").write_text(PEER)
    t = {"nnU-Net predictor (no TTA)": [], "segcook predict --fast": [], "segcook predict --no-tta": []}
    if a.tta: t |= {"nnU-Net predictor (mirroring, 8 passes)": [], "segcook predict (default, 8 flips)": []}
    for i in range(a.reps):
        for k in t:
            out = work/"pred"/"".join(ch if ch.isalnum() else "_" for ch in k)
            shutil.rmtree(out, ignore_errors=True); out.mkdir(parents=True)
            if k.startswith("nnU-Net"):
                cmd = [str(NNUNET_PY), str(work/"peer.py"), str(pre), str(raw), case.id, str(out), str(a.threads), a.device,
                       "1" if "mirroring" in k else "0"]
            else:
                cmd = [SEGCOOK, "predict", "--exp", str(exp), "--input", str(work/"one.csv"), "--out", str(out), "--folds", "0",
                       "--device", a.device] + ([k.split()[-1]] if k.split()[-1].startswith("--") else [])
            t[k].append(timed(cmd, env, log))
        print(f"rep {i}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in t.items()), f"(load {os.getloadavg()[0]:.2f})", flush=True)
    print("| command | median wall s | all wall s |\n|---|---|---|")
    for k, v in t.items(): print(f"| {k} | {statistics.median(v):.1f} | {', '.join(f'{x:.1f}' for x in v)} |")
    for k in list(t)[1:]:
        base = t["nnU-Net predictor (mirroring, 8 passes)" if "8 flips" in k else "nnU-Net predictor (no TTA)"]
        if "mirroring" in k: continue
        r = [b / x for b, x in zip(base, t[k])]
        print(f"nnU-Net / {k}: per repetition {', '.join(f'{x:.2f}' for x in r)}; median {statistics.median(r):.2f}x")


if __name__ == "__main__": main()
