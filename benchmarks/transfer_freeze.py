"""What freezing saves: steps/s and memory of fine-tuning with a part frozen vs the whole network trained.

    .venv/bin/python benchmarks/transfer_freeze.py [--patch 64] [--base 16] [--steps 8] [--reps 3]

Each arm (freeze none / encoder / decoder / middle) runs in its own process (so its peak memory is its own):
nnU-Net (segcook's `nnunet`, base width `--base`, BraTS-like 4 channels -> 3 regions, Dice+CE) on random
`--patch`^3 patches, batch 2, AdamW, built and frozen exactly as `segcook train --freeze` does
(`segcook.transfer.freeze` + `param_groups`). It times `--steps` optimisation steps after 2 warm-up steps and
reports steps/s, trainable parameters, optimiser state and the process's peak memory (CPU: peak RSS; GPU: the
peak of torch's allocator). The arms are run in turn, `--reps` rounds (A B C D A B C D ...), medians reported,
with each arm's steps/s relative to `none` (full fine-tuning) round by round.
"""
import argparse, json, os, resource, statistics, subprocess, sys, time

ARMS = ("none", "encoder", "decoder", "middle")


def one(freeze, patch, base, steps, device):
    import torch
    from segcook.core import Plan, Channel, Labels
    from segcook.nets import build_net
    from segcook.losses import build_loss
    from segcook.transfer import freeze as do_freeze, param_groups
    p = Plan(channels=[Channel(c) for c in ("t1", "t1c", "t2", "flair")],
             labels=Labels(labels=[0, 1, 2, 3], regions={"WT": [1, 2, 3], "TC": [1, 3], "ET": [3]}))
    p.spatial.target_spacing, p.spatial.patch_size = [1.0, 1.0, 1.0], [patch] * 3
    p.train.arch_kwargs = {"base": base}
    torch.manual_seed(0)
    net = build_net(p).to(device)
    do_freeze(net, freeze)
    opt = torch.optim.AdamW(param_groups(net, 1e-4, 10.0))
    loss_fn = build_loss(p).to(device)
    x = torch.randn(2, 4, patch, patch, patch, device=device)
    y = torch.randint(0, 4, (2, 1, patch, patch, patch), device=device)
    def step():
        out = net(x); loss = loss_fn(out, y)
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
    for _ in range(2): step()
    if device == "cuda": torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps): step()
    if device == "cuda": torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    state = sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values() if torch.is_tensor(t))
    mem = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"freeze": freeze, "steps_per_s": steps / dt, "trainable_M": sum(q.numel() for q in net.parameters() if q.requires_grad) / 1e6,
            "optimizer_state_MiB": state / 2**20, "peak_MiB": mem}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patch", type=int, default=64); ap.add_argument("--base", type=int, default=16)
    ap.add_argument("--steps", type=int, default=8); ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--device", default="cpu"); ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one(a.one, a.patch, a.base, a.steps, a.device))); return
    rows = []
    for r in range(a.reps):
        for arm in ARMS:
            out = subprocess.run([sys.executable, __file__, "--one", arm, "--patch", str(a.patch), "--base", str(a.base),
                                  "--steps", str(a.steps), "--device", a.device], capture_output=True, text=True, check=True)
            rows.append({"rep": r, **json.loads(out.stdout.strip().splitlines()[-1])})
            print(json.dumps(rows[-1]), flush=True)
    print(f"\npatch {a.patch}^3, base {a.base}, batch 2, {a.steps} timed steps, device {a.device}, {a.reps} rounds; medians:")
    print("| frozen | steps/s | vs none (round by round) | trainable (M) | optimiser state (MiB) | peak memory (MiB) |")
    print("|---|---|---|---|---|---|")
    for arm in ARMS:
        mine = [x for x in rows if x["freeze"] == arm]
        ratio = [x["steps_per_s"] / y["steps_per_s"] for x, y in zip(mine, [x for x in rows if x["freeze"] == "none"])]
        med = lambda k: statistics.median(x[k] for x in mine)
        print(f"| {arm} | {med('steps_per_s'):.3f} | {statistics.median(ratio):.2f}x ({', '.join(f'{q:.2f}' for q in ratio)}) | "
              f"{med('trainable_M'):.3f} | {med('optimizer_state_MiB'):.1f} | {med('peak_MiB'):.0f} |")


if __name__ == "__main__":
    main()
