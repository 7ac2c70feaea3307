"Every registered architecture: forward/backward on CPU, shapes (with deep supervision), parts, counts, overfitting."
import warnings
import pytest, torch
from segcook.core import Plan, SegcookError, ARCHS
from segcook.nets import *
from segcook.core import get_topology
from segcook.losses import build_loss, DiceCELoss

warnings.filterwarnings("ignore")
torch.set_num_threads(2)

# (arch, patch, kwargs): the smallest configuration that keeps each architecture's structure
CASES = [
    ("nnunet", [32, 32, 16], {}),
    ("nnunet", [32, 32, 32], {"residual": True, "deep_supervision": 2}),
    ("nnunet", [32, 32, 32], {"pocket": True, "vae": True, "deep_supervision": 1}),
    ("nnunet_resenc", [32, 32, 32], {"base": 8, "deep_supervision": 1}),
    ("unet", [32, 32, 32], {"deep_supervision": 1}),
    ("mednext_s", [32, 32, 32], {"deep_supervision": 2}),
    ("mednext_b", [32, 32, 32], {}),
    ("mednext_m", [32, 32, 32], {}),
    ("mednext_l", [32, 32, 32], {}),
    ("swin_unetr", [64, 64, 64], {"feature_size": 12, "depths": (1, 1, 1, 1)}),
    ("fmgnet", [32, 32, 32], {"deep_supervision": 1}),
    ("wnet", [32, 32, 32], {"width": 8}),
    ("stunet_s", [32, 32, 32], {"deep_supervision": 1}),
    ("stunet_b", [32, 32, 32], {"base": 8}),
    ("stunet_l", [32, 32, 32], {"base": 4}),
    ("stunet_h", [32, 32, 32], {"base": 4, "deep_supervision": 2}),
]

def test_every_registered_arch_is_tested():
    assert {c[0] for c in CASES} == set(ARCHS.names())

@pytest.mark.parametrize("name,ps,kw", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_forward_backward_shapes_parts(name, ps, kw):
    torch.manual_seed(0)
    net = ARCHS[name](2, 3, ps, [1.0, 1.0, 1.0], **kw).train()
    x = torch.randn(1, 2, *ps)
    out = net(x)
    ds = kw.get("deep_supervision", 0)
    if ds:
        assert isinstance(out, list) and len(out) == ds + 1
        for i, o in enumerate(out):
            assert o.shape[:2] == (1, 3)
            assert list(o.shape[2:]) == [p // 2**i for p in ps], (i, o.shape)
        loss = sum(o.float().square().mean() for o in out)
    else:
        assert out.shape == (1, 3, *ps)
        loss = out.square().mean()
    if getattr(net, "aux_loss", None) is not None: loss = loss + net.aux_loss
    loss.backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad and p.grad is not None)
    assert sum(p.grad.abs().sum().item() for p in net.parameters() if p.grad is not None) > 0
    with torch.no_grad(): assert net.eval()(x).shape == (1, 3, *ps)
    parts = net_parts(net)
    assert set(parts) == {"encoder", "decoder", "head"}
    ids = [id(p) for m in parts.values() for p in m.parameters()]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in net.parameters()}

@pytest.mark.parametrize("v,published", [("s", 14.6e6), ("b", 58.26e6), ("l", 440.30e6), ("h", 1457.33e6)])
def test_stunet_parameter_counts(v, published):
    # SegBook/STU-Net counts: 128^3 patches at 1 mm, 105 classes (TotalSegmentator + background), meta device
    n = count_params(ARCHS[f"stunet_{v}"], 1, 105, [128, 128, 128], [1, 1, 1])
    assert abs(n / published - 1) < 0.02, (v, n)

def test_mednext_counts_match_paper():
    # MedNeXt paper (k=3): S 5.6M, B 10.5M, M 17.6M, L 61.8M
    for v, pub in zip("sbml", (5.6e6, 10.5e6, 17.6e6, 61.8e6)):
        n = count_params(ARCHS[f"mednext_{v}"], 1, 2, [128, 128, 128])
        assert abs(n / pub - 1) < 0.03, (v, n)

def test_topology_anisotropic_and_bad_patch():
    k, s = get_topology([160, 160, 32], [0.7, 0.7, 3.0])
    assert k[0] == [3, 3, 1] and s[1] == [2, 2, 1]
    net = nnunet(1, 2, [160, 160, 32], [0.7, 0.7, 3.0])
    assert net.encoder[0][0][0].kernel_size == (3, 3, 1)
    with pytest.raises(SegcookError, match=r"axis 2 \(z\) has 9 voxels after 2 halving"):
        get_topology([64, 64, 36], [1, 1, 1])
    with pytest.raises(SegcookError, match=r"axis 1 \(y\) has 80 voxels, not a multiple of 32"):
        ARCHS["swin_unetr"](1, 2, [64, 80, 64], [1, 1, 1])
    with pytest.raises(SegcookError, match="deep_supervision=4"):
        nnunet(1, 2, [32, 32, 32], deep_supervision=4)

def test_build_net_from_plan():
    p = Plan(); p.spatial.patch_size, p.spatial.target_spacing = [32, 32, 32], [1.0, 1.0, 1.0]
    p.labels.labels, p.labels.regions = [0, 1, 2, 3], {"WT": [1, 2, 3], "TC": [1, 3], "ET": [3]}
    p.channels = p.channels * 1
    p.preprocess.mind = "extra"
    p.train.deep_supervision, p.train.arch_kwargs = 1, {"pocket": True, "residual": True}
    net = build_net(p)
    assert net.build_args["in_channels"] == 1 + MIND_CHANNELS and net.build_args["out_channels"] == 3
    assert net.build_args["pocket"] and net.build_args["deep_supervision"] == 1
    assert len(net.train()(torch.randn(1, 1 + MIND_CHANNELS, 32, 32, 32))) == 2
    with pytest.raises(SegcookError, match="Did you mean 'nnunet'"):
        build_net(p, arch="nnunet2")
    p.spatial.patch_size = None
    with pytest.raises(SegcookError, match="patch_size is not set"):
        build_net(p)

def test_memory_estimate_grows_with_patch_and_batch():
    net = nnunet(1, 2, [64, 64, 64])
    a, b = memory_estimate(net, [64, 64, 64], 1), memory_estimate(net, [64, 64, 64], 2)
    assert abs(b["activations_mib"] / a["activations_mib"] - 2) < 1e-6
    assert a["params_mib"] == pytest.approx(sum(p.numel() for p in net.parameters()) * 4 / 2**20)
    # STU-Net-H estimate without allocating it
    h = on_meta(ARCHS["stunet_h"], 1, 2, [128, 128, 128])
    assert memory_estimate(h, [128, 128, 128], 1, in_channels=1)["params_mib"] > 5000

def test_cli_archs(capsys):
    assert cli_archs([]) == 0
    out = capsys.readouterr().out
    assert "stunet_h" in out and "1457.0" in out and "nnunet" in out

def _phantom(ps=(32, 32, 32), seed=0):
    g = torch.Generator().manual_seed(seed)
    c = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in ps], indexing="ij"))
    lbl = (((c - torch.tensor([14., 17, 15]).view(3, 1, 1, 1)) ** 2).sum(0) < 8 ** 2).long()
    lbl = lbl + ((((c - torch.tensor([14., 17, 15]).view(3, 1, 1, 1)) ** 2).sum(0) < 4 ** 2).long())
    img = lbl.float() + 0.5 * torch.randn(ps, generator=g)
    return img[None, None], lbl[None, None]

@pytest.mark.slow   # 2-8 minutes on 2 cores
def test_default_net_overfits_a_phantom_patch():
    torch.manual_seed(0)
    x, y = _phantom()
    p = Plan(); p.spatial.patch_size, p.spatial.target_spacing = [32, 32, 32], [1.0, 1.0, 1.0]
    p.labels.labels = [0, 1, 2]
    net, loss = build_net(p).train(), build_loss(p)
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    dice = 0.0
    for step in range(300):
        opt.zero_grad(); l = loss(net(x), y); l.backward(); opt.step()
        if step % 20 == 19:
            with torch.no_grad(): pred = net.eval()(x).argmax(1, keepdim=True); net.train()
            dice = min(2 * ((pred == c) & (y == c)).sum().item() / ((pred == c).sum() + (y == c).sum()).item() for c in (1, 2))
            if dice > 0.9: break
    assert dice > 0.9, (step, dice)


def test_region_heads_start_at_foreground_prior():
    "Region (sigmoid) models start near p=0.1 everywhere, not 0.5 (above the BraTS thresholds); softmax models are untouched."
    p = Plan(); p.spatial.patch_size, p.spatial.target_spacing = [32, 32, 32], [1.0, 1.0, 1.0]
    p.labels.labels, p.labels.regions = [0, 1, 2, 3], {"WT": [1, 2, 3], "TC": [1, 3], "ET": [3]}
    p.train.deep_supervision = 2
    torch.manual_seed(0)
    net = build_net(p).train()
    with torch.no_grad(): outs = net(torch.randn(1, 1, 32, 32, 32))
    for o in outs: assert abs(torch.sigmoid(o).mean().item() - 0.1) < 0.05
    p.labels.regions = None
    torch.manual_seed(0)
    with torch.no_grad(): q = torch.softmax(build_net(p).eval()(torch.randn(1, 1, 32, 32, 32)), 1)
    assert abs(q.mean((0, 2, 3, 4)) - 0.25).max() < 0.2      # no prior forced onto softmax heads
