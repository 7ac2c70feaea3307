"""Forward + backward time of segcook's default network vs MIST's default (nnunet), same patch and channels, CPU.

Run: PYTHONPATH=. python benchmarks/nets.py [--patch 64 64 64] [--batch 2] [--channels 4] [--classes 4] [--reps 3] [--rounds 3]
MIST runs in its own venv (/work/peers/mist, mist-medical==2.3.0) in a subprocess, one after the other
(never concurrently), with the same number of torch threads. Without that venv it falls back to MONAI's
DynUNet configured like MIST's default and says so. On a shared machine the load changes from minute to minute,
so the three networks are timed in `--rounds` interleaved rounds (each: median of `--reps` steps); the table gives
the median over rounds, and the ratio is the median of the per-round ratios (each measured minutes apart at most).
"""
import argparse, json, os, subprocess, sys, textwrap, time
from pathlib import Path

MIST_PY = Path(os.environ.get("MIST_PY", "/work/peers/mist/bin/python"))

TIMER = textwrap.dedent("""
import time, torch
def time_fb(net, x, reps, bf16=False):
    def step():
        out = net(x)
        if isinstance(out, dict): out = [out["prediction"], *(out.get("deep_supervision") or [])]
        outs = out if isinstance(out, (list, tuple)) else [out]
        sum(o.float().square().mean() for o in outs).backward()
    net.train(); step()
    ts = []
    for _ in range(reps):
        net.zero_grad(set_to_none=True); t = time.perf_counter(); step(); ts.append(time.perf_counter() - t)
    ts.sort(); return ts[len(ts) // 2]
""")

MIST_SNIPPET = TIMER + textwrap.dedent("""
import json, sys
torch.set_num_threads({threads}); torch.manual_seed(0)
from mist.models.model_registry import get_model_from_registry
import mist.models.nnunet.nnunet_registry
net = get_model_from_registry("nnunet", in_channels={cin}, out_channels={cout}, patch_size={ps}, target_spacing=[1.0, 1.0, 1.0])
x = torch.randn({bs}, {cin}, *{ps})
print(json.dumps({{"median_s": time_fb(net, x, {reps}), "params": sum(p.numel() for p in net.parameters())}}))
""")

def ours(cfg, a):
    import torch
    exec(TIMER, g := {})
    from segcook.nets import nnunet
    torch.set_num_threads(a.threads); torch.manual_seed(0)
    net = nnunet(a.channels, a.classes, a.patch, [1.0, 1.0, 1.0], **cfg)
    x = torch.randn(a.batch, a.channels, *a.patch)
    return {"median_s": g["time_fb"](net, x, a.reps), "params": sum(p.numel() for p in net.parameters())}

def mist(a):
    if MIST_PY.exists():
        code = MIST_SNIPPET.format(threads=a.threads, cin=a.channels, cout=a.classes, ps=list(a.patch), bs=a.batch, reps=a.reps)
        r = subprocess.run([str(MIST_PY), "-c", code], capture_output=True, text=True)
        if r.returncode == 0: return json.loads(r.stdout.strip().splitlines()[-1]) | {"what": "MIST 2.3.0 nnunet (residual, 2 DS heads)"}
        print("MIST failed:", r.stderr[-2000:], file=sys.stderr)
    import torch
    from monai.networks.nets import DynUNet
    from segcook.nets import get_topology
    exec(TIMER, g := {})
    k, s = get_topology(a.patch, [1, 1, 1], 5)
    net = DynUNet(3, a.channels, a.classes, k, s, s[1:], filters=[min(32 * 2**i, 320) for i in range(len(s))],
                  norm_name=("INSTANCE", {"affine": True}), act_name=("leakyrelu", {"negative_slope": 0.01}),
                  deep_supervision=True, deep_supr_num=2, res_block=True)
    x = torch.randn(a.batch, a.channels, *a.patch)
    return {"median_s": g["time_fb"](net, x, a.reps), "params": sum(p.numel() for p in net.parameters()),
            "what": "MONAI DynUNet configured like MIST's default (MIST not installed)"}

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--patch", type=int, nargs=3, default=[64, 64, 64]); p.add_argument("--batch", type=int, default=2)
    p.add_argument("--channels", type=int, default=4); p.add_argument("--classes", type=int, default=4)
    p.add_argument("--reps", type=int, default=3); p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (segcook, segcook MIST-config, MIST)")
    a = p.parse_args()
    cfgs = [("segcook nnunet (default: plain, no DS)", {}),
            ("segcook nnunet residual=True, deep_supervision=2 (MIST's default config)", {"residual": True, "deep_supervision": 2})]
    runs, loads, mist_name = {n: [] for n, _ in cfgs}, [], None
    for k in range(a.rounds):
        loads.append(os.getloadavg()[0])
        res = {n: ours(c, a) for n, c in cfgs}
        m = mist(a); mist_name = m.pop("what"); res[mist_name] = m
        for n, r in res.items(): runs.setdefault(n, []).append(r)
        print(f"round {k + 1}: " + "; ".join(f"{n.split(' (')[0]}{' MIST-config' if 'residual' in n else ''}: {r['median_s']:.3f} s" for n, r in res.items())
              + f" (1-min load {loads[-1]:.1f})", file=sys.stderr, flush=True)
    med = lambda xs: sorted(xs)[len(xs) // 2]
    print(f"\nforward+backward, batch {a.batch} x {a.channels} ch x {tuple(a.patch)}, {a.classes} classes, "
          f"{a.threads} torch threads, CPU; per round the median of {a.reps} steps, then the median over {a.rounds} "
          f"interleaved rounds; 1-min load average at the start of each round: {', '.join(f'{l:.1f}' for l in loads)}\n")
    print("| network | params (M) | fwd+bwd (s), median over rounds | per-round times (s) | time / MIST (median of per-round ratios) |\n|---|---|---|---|---|")
    ref = runs[mist_name]
    for name, rs in runs.items():
        ratio = med([r["median_s"] / q["median_s"] for r, q in zip(rs, ref)])
        per_round = ", ".join(f"{r['median_s']:.2f}" for r in rs)
        print(f"| {name} | {rs[0]['params'] / 1e6:.2f} | {med([r['median_s'] for r in rs]):.3f} | {per_round} | {ratio:.2f} |")

if __name__ == "__main__": main()
