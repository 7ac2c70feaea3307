"""Sliding-window inference, side by side: segcook.inference.sliding_window vs MONAI's sliding_window_inference.

Same network (segcook's nnunet, random weights, eval mode), same input, same settings (patch, overlap 0.5,
Gaussian blending with sigma 0.125, batched windows). Prints a markdown row: times, ratio, max |difference|.
Run:  PYTHONPATH=. python benchmarks/inference.py [--size 4 128 128 128] [--patch 64 64 64] [--sw-batch 2] [--reps 2] [--device cpu]
The reps alternate MONAI and segcook; every rep is printed (with the load average), and the best time of each.
"""
import argparse, time
import torch
from monai.inferers import sliding_window_inference
from segcook.core import Plan, Channel
from segcook.nets import build_net
from segcook.inference import sliding_window


def small_net(ch, patch, out=3):
    "segcook's nnunet for `ch` channels and `out` outputs, capped small so the benchmark runs on CPU."
    p = Plan(); p.channels = [Channel(name=f"c{i}") for i in range(ch)]
    p.labels.labels = list(range(out)); p.spatial.patch_size = list(patch); p.spatial.target_spacing = [1.0, 1.0, 1.0]
    p.train.arch_kwargs = {"base": 8, "max_width": 64}
    return build_net(p).eval()


def timed(fn, device):
    if device.type == "cuda": torch.cuda.synchronize()
    t = time.perf_counter(); out = fn()
    if device.type == "cuda": torch.cuda.synchronize()
    return time.perf_counter() - t, out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, nargs=4, default=[4, 128, 128, 128], help="C X Y Z")
    ap.add_argument("--patch", type=int, nargs=3, default=[64, 64, 64])
    ap.add_argument("--sw-batch", type=int, default=2)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    dev = torch.device(a.device)
    torch.manual_seed(0)
    net = small_net(a.size[0], a.patch).to(dev)
    x = torch.randn(1, *a.size, device=dev)
    with torch.no_grad(): net(x[(slice(None), slice(None), *[slice(0, p) for p in a.patch])])  # warm-up
    ours = lambda: sliding_window(net, x, a.patch, overlap=0.5, sigma=0.125, sw_batch_size=a.sw_batch)
    def theirs():
        with torch.no_grad():
            return sliding_window_inference(x, a.patch, a.sw_batch, net, overlap=0.5, mode="gaussian", sigma_scale=0.125)
    t_m = t_s = float("inf")
    import os
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    for i in range(a.reps):                     # interleaved rounds, best of each: fair on a shared machine
        t1, y_m = timed(theirs, dev); t_m = min(t_m, t1)
        t2, y_s = timed(ours, dev); t_s = min(t_s, t2)
        print(f"rep {i + 1}: MONAI {t1:.2f} s, segcook {t2:.2f} s, ratio {t1 / t2:.2f}x (load {os.getloadavg()[0]:.2f})")
    diff = (y_s - y_m).abs().max().item()
    print("| input | patch | sw batch | device | segcook s | MONAI s | MONAI / segcook | max abs diff |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {'x'.join(map(str, a.size))} | {'x'.join(map(str, a.patch))} | {a.sw_batch} | {dev.type} | "
          f"{t_s:.2f} | {t_m:.2f} | {t_m / t_s:.2f}x | {diff:.2e} |")


if __name__ == "__main__":
    main()
