"Losses against MONAI (same formula, random inputs and published values) and hand-computed cases."
import warnings
import numpy as np, pytest, torch
import torch.nn.functional as F
import monai.losses as ML
from segcook.core import Plan, SegcookError, LOSSES
from segcook.losses import *

warnings.filterwarnings("ignore")
torch.manual_seed(0)

def _rand(B=2, C=3, shape=(8, 8, 8), seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, C, *shape, generator=g) * 2
    t = torch.randint(0, C, (B, 1, *shape), generator=g)
    return x, t

def _onehot(t, C): return F.one_hot(t[:, 0], C).movedim(-1, 1).float()

# ---- published MONAI values (FACTS.md) ----
def test_monai_published_values():
    x = torch.tensor([[[1., 1, 0], [0, 0, 1]], [[1, 0, 1], [0, 1, 0]]]); t = torch.tensor([[[0, 0, 1]], [[0, 1, 0]]])
    assert abs(LOSSES["ce"]()(x, t).item() - 0.3133) < 1e-4                     # MONAI DiceCELoss CE term
    x2, t2 = torch.tensor([[[[1., -1], [-1, 1]]]]), torch.tensor([[[[1, 0], [1, 1]]]])
    assert abs(LOSSES["dice"](regions={"fg": [1]}, smooth_nr=1e-6, smooth_dr=1e-6)(x2, t2).item() - 0.307576) < 1e-5
    assert abs(LOSSES["hausdorff_dt"](regions={"fg": [1]})(x2, t2).item() - 0.509329) < 1e-5

# ---- agreement with MONAI on random inputs ----
@pytest.mark.parametrize("bg,batch", [(True, False), (False, False), (False, True)])
def test_dice_softmax_vs_monai(bg, batch):
    x, t = _rand()
    ref = ML.DiceLoss(include_background=bg, to_onehot_y=True, softmax=True, batch=batch)(x, t)
    ours = LOSSES["dice"](labels=[0, 1, 2], include_background=bg, batch=batch)(x, t)
    assert torch.allclose(ours, ref, atol=1e-6)

def test_dice_ce_vs_monai():
    x, t = _rand()
    ref = ML.DiceCELoss(to_onehot_y=True, softmax=True, include_background=False)(x, t)
    assert torch.allclose(LOSSES["dice_ce"](labels=[0, 1, 2])(x, t), ref, atol=1e-6)

def test_region_dice_and_bce_vs_monai():
    x, t = _rand(C=3)
    regions = {"WT": [1, 2, 3], "TC": [1, 3], "ET": [3]}
    t = torch.randint(0, 4, t.shape)
    y = torch.cat([torch.isin(t, torch.tensor(v)) for v in regions.values()], 1).float()
    ref = ML.DiceLoss(sigmoid=True)(x, y) + F.binary_cross_entropy_with_logits(x, y)
    ours = LOSSES["dice_ce"](labels=[0, 1, 2, 3], regions=regions)(x, t)
    assert torch.allclose(ours, ref, atol=1e-6)

def test_focal_vs_monai():
    x, t = _rand()
    ref = ML.FocalLoss(to_onehot_y=True, use_softmax=True, gamma=2.0)(x, t)
    assert torch.allclose(LOSSES["focal"](labels=[0, 1, 2])(x, t), ref, atol=1e-6)
    xs, ts = _rand(C=1)
    ts = (ts > 0).long() if ts.max() > 0 else ts
    ts = torch.randint(0, 2, ts.shape)
    ref = ML.FocalLoss(gamma=2.0)(xs, ts.float())
    assert torch.allclose(LOSSES["focal"](regions={"fg": [1]})(xs, ts), ref, atol=1e-6)

def test_cldice_vs_monai():
    x, t = _rand(shape=(12, 12, 12))
    ref = ML.SoftDiceclDiceLoss(softmax=True, include_background=True)(x, _onehot(t, 3))
    assert torch.allclose(LOSSES["cldice"](labels=[0, 1, 2], include_background=True)(x, t), ref, atol=1e-5)

def test_boundary_vs_monai_given_same_map():
    x, t = _rand()
    mb = ML.BoundaryLoss(softmax=True, include_background=False)
    dtm = mb.compute_distance_map(_onehot(t, 3))
    assert torch.allclose(LOSSES["boundary"](labels=[0, 1, 2])(x, t, dtm), mb(x, _onehot(t, 3)), atol=1e-5)

def test_hausdorff_vs_monai_random():
    x, t = _rand()
    ref = ML.HausdorffDTLoss(softmax=True, include_background=False)(x, _onehot(t, 3))
    assert torch.allclose(LOSSES["hausdorff_dt"](labels=[0, 1, 2])(x, t), ref, atol=1e-4)

# ---- hand-computed cases ----
def _perfect(t, C, s=30.): return (_onehot(t, C) * 2 - 1) * s

def test_perfect_prediction_is_near_zero():
    t = torch.zeros(1, 1, 10, 10, 10, dtype=torch.long); t[0, 0, 3:7, 3:7, 3:7] = 1; t[0, 0, 4:6, 4:6, 4:6] = 2
    x = _perfect(t, 3)
    for name in ["dice_ce", "dice", "ce", "focal", "dice_focal", "cldice", "hausdorff_dt", "gsl", "edge", "mse"]:
        v = LOSSES[name](labels=[0, 1, 2])(x, t).item()
        assert abs(v) < 1e-4, (name, v)
    # boundary loss of a perfect prediction is -(mean inside distance): hand computed from the map
    dtm = distance_maps(_onehot(t, 3))
    expect = (dtm[:, 1:] * (dtm[:, 1:] < 0)).sum() / (2 * 1000)
    assert abs(LOSSES["boundary"](labels=[0, 1, 2])(x, t).item() - expect.item()) < 1e-5

def test_empty_class():
    "A class absent from target and prediction costs nothing in Dice (smoothing makes 0/0 -> 1)."
    t = torch.zeros(1, 1, 6, 6, 6, dtype=torch.long); t[0, 0, :3] = 1        # label 2 absent
    x = _perfect(t, 3)
    assert LOSSES["dice"](labels=[0, 1, 2])(x, t).item() < 1e-4
    # predicting the absent class everywhere inside the object costs a full Dice point for it
    x2 = x.clone(); x2[:, 2] = 100
    v = LOSSES["dice"](labels=[0, 1, 2])(x2, t).item()
    assert abs(v - 1.0) < 1e-4        # class 1 -> dice 0 (loss 1), class 2 -> loss 1: mean 1

def test_known_small_volume_dice():
    "Probabilities 0.5 everywhere on a 2-voxel volume with one foreground voxel."
    x = torch.zeros(1, 2, 2); t = torch.tensor([[[0, 1]]])
    v = LOSSES["dice"](labels=[0, 1], smooth_nr=0, smooth_dr=0)(x, t).item()
    assert abs(v - (1 - 2 * 0.5 / (1.0 + 1))) < 1e-6

def test_distance_maps_mm():
    y = torch.zeros(1, 1, 7, 3); y[0, 0, 3] = 1
    d = distance_maps(y, spacing=(2.0, 1.0))[0, 0, :, 1]
    assert d.tolist() == [6.0, 4.0, 2.0, -2.0, 2.0, 4.0, 6.0]

def test_ignore_label_drops_voxels():
    x, t = _rand(C=2)
    t = torch.randint(0, 2, t.shape); ign = t.clone(); ign[:, :, :4] = 7
    for name in ["dice_ce", "focal", "mse", "edge", "cldice"]:
        full = LOSSES[name](labels=[0, 1], ignore_label=7)
        # changing the logits where the label is ignored must not change the loss
        x2 = x.clone(); x2[:, :, :4] = torch.randn_like(x2[:, :, :4]) * 5
        if name in ("edge", "cldice"): continue  # neighbourhood losses see across the mask border
        assert torch.allclose(full(x, ign), full(x2, ign), atol=1e-6), name
    ce = LOSSES["ce"](labels=[0, 1], ignore_label=7)(x, ign)
    ref = F.cross_entropy(x[:, :, 4:], t[:, 0, 4:])
    assert torch.allclose(ce, ref, atol=1e-6)

def test_deep_supervision_weights_and_targets():
    t = torch.randint(0, 2, (1, 1, 8, 8, 8))
    full, half = torch.randn(1, 2, 8, 8, 8), torch.randn(1, 2, 4, 4, 4)
    base = LOSSES["dice_ce"]()
    ds = DeepSupervisionLoss(base)
    t_half = t[:, :, ::2, ::2, ::2]
    expect = 2 / 3 * base(full, t) + 1 / 3 * base(half, t_half)
    assert torch.allclose(ds([full, half], t), expect, atol=1e-6)
    assert torch.allclose(ds(full, t), base(full, t))

def test_compound_schedule():
    c = LOSSES["compound"](terms=[{"name": "dice", "weight": 1.0}, {"name": "gsl", "weight": {"start": 0, "end": 1, "schedule": "step", "at": 0.5}}])
    x, t = _rand(C=2); t = torch.randint(0, 2, t.shape)
    assert torch.allclose(c(x, t), LOSSES["dice"]()(x, t))
    c.set_progress(0.6)
    assert torch.allclose(c(x, t), LOSSES["dice"]()(x, t) + LOSSES["gsl"]()(x, t))

def test_build_loss_from_plan():
    p = Plan(); p.labels.labels = [0, 1, 2]; p.train.deep_supervision = 2; p.train.loss = "dice_focal"
    l = build_loss(p)
    assert isinstance(l, DeepSupervisionLoss) and isinstance(l.loss, DiceFocalLoss)

def test_bad_input_messages():
    with pytest.raises(SegcookError, match="region loss"):
        LOSSES["dice"](labels=[0, 1, 2, 3], regions={"WT": [1, 2, 3], "TC": [1, 3], "ET": [3]})(torch.zeros(1, 4, 4, 4, 4), torch.zeros(1, 1, 4, 4, 4))
    with pytest.raises(SegcookError, match="region model"):
        LOSSES["dice_ce"](labels=[0, 1, 2, 3])(torch.zeros(1, 3, 4, 4, 4), torch.zeros(1, 1, 4, 4, 4))
    with pytest.raises(SegcookError, match="available"):
        LOSSES["dicece"]
    with pytest.raises(SegcookError, match="dtm has shape"):
        LOSSES["boundary"]()(torch.zeros(1, 2, 4, 4, 4), torch.zeros(1, 1, 4, 4, 4, dtype=torch.long), torch.zeros(1, 1, 4, 4, 4))
    with pytest.raises(SegcookError, match="target should be"):
        LOSSES["dice"]()(torch.zeros(1, 2, 4, 4, 4), torch.zeros(1, 4, 4, 4, dtype=torch.long))

def test_cli_losses(capsys):
    assert cli_losses([]) == 0
    out = capsys.readouterr().out
    assert "dice_ce" in out and "gsl" in out and "compound" in out
