"Inference: sliding window vs MONAI, Gaussian weights, TTA, ensembling, regions -> labels, native geometry, resume, CLI."
import itertools, json, os, subprocess, time
from pathlib import Path
import numpy as np
import pytest
import torch
import SimpleITK as sitk
from monai.inferers import sliding_window_inference
from monai.data.utils import compute_importance_map

from segcook.core import Plan, Channel, SegcookError, save_plan, plan_to_dict, read_image, to_xyz, compare_headers, write_image, from_xyz
from segcook.data import make_phantom
from segcook.nets import build_net
from segcook.inference import (gaussian_weights, window_starts, sliding_window, flip_sets, predict_volume, regions_to_labels,
                               labels_of, region_thresholds, resample_torch, find_inputs, predict, predict_oof, cli_predict,
                               available_folds)
from conftest import segcook_cmd

BRATS = {"WT": [1, 2, 3], "TC": [1, 3], "ET": [3]}


def conv_net(cin=2, cout=3, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv3d(cin, 4, 3, padding=1), torch.nn.LeakyReLU(),
                               torch.nn.Conv3d(4, cout, 3, padding=1)).eval()


# ---------------------------------------------------------------- sliding window vs MONAI
@pytest.mark.parametrize("shape,ps,overlap,bs", [
    ((1, 2, 20, 17, 9), (8, 8, 8), 0.5, 1),          # not a multiple of the window
    ((1, 2, 5, 6, 4), (8, 8, 8), 0.5, 2),            # smaller than the window on every axis
    ((2, 2, 24, 7, 16), (8, 10, 8), 0.5, 3),         # two images, one axis smaller than the window
    ((1, 2, 33, 16, 19), (16, 8, 12), 0.25, 4),      # other overlap, anisotropic window
    ((1, 2, 16, 16, 16), (16, 16, 16), 0.5, 1),      # exactly one window
    ((1, 2, 30, 21, 11), (7, 9, 5), 0.6, 5),         # odd windows
])
def test_sliding_window_equals_monai(shape, ps, overlap, bs):
    net, x = conv_net(), torch.randn(*shape)
    ours = sliding_window(net, x, ps, overlap=overlap, sw_batch_size=bs)
    with torch.no_grad():
        ref = sliding_window_inference(x, ps, bs, net, overlap=overlap, mode="gaussian", sigma_scale=0.125)
    assert ours.shape == ref.shape == (shape[0], 3, *shape[2:])
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_sliding_window_devices_and_activation():
    "Stitching on another device than the network (both CPU here), probabilities, deep-supervision lists."
    net, x = conv_net(), torch.randn(1, 2, 12, 12, 12)
    class DS(torch.nn.Module):
        def __init__(self): super().__init__(); self.net = net
        def forward(self, x): y = self.net(x); return [y, y[:, :, ::2, ::2, ::2]]
    plain = sliding_window(net, x, (8, 8, 8))
    torch.testing.assert_close(sliding_window(DS(), x, (8, 8, 8), device="cpu", sw_device="cpu"), plain)
    torch.testing.assert_close(sliding_window(net, x, (8, 8, 8), act="softmax"), torch.softmax(plain, 1))
    torch.testing.assert_close(sliding_window(net, x, (8, 8, 8), act="sigmoid"), torch.sigmoid(plain))
    with pytest.raises(SegcookError, match="act should be"): sliding_window(net, x, (8, 8, 8), act="relu")


def test_identity_net_returns_image():
    x = torch.randn(1, 1, 19, 23, 7)
    torch.testing.assert_close(sliding_window(torch.nn.Identity(), x, (8, 8, 8)), x, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- Gaussian weights
@pytest.mark.parametrize("ps", [(9, 9, 9), (8, 12, 5), (64, 64, 32)])
def test_gaussian_weights_symmetric_peaked(ps):
    w = gaussian_weights(ps)
    for d in range(3): assert torch.equal(w, w.flip(d))
    centre = tuple(n // 2 for n in ps)
    assert w.max() == w[centre]                         # peaked at the centre
    if all(n % 2 for n in ps): assert w[centre].item() == pytest.approx(1.0)
    # hand computation along one axis: exp(-d^2 / (2 (0.125 n)^2)), d from the centre
    n = ps[0]; d = np.arange(n) - (n - 1) / 2
    g = np.exp(-d**2 / (2 * (0.125 * n)**2))
    prof = w[:, ps[1] // 2, ps[2] // 2].numpy() / (w[centre].item() / g[n // 2])
    np.testing.assert_allclose(np.maximum(prof, 0), g, rtol=1e-5, atol=2e-3)
    torch.testing.assert_close(w, compute_importance_map(ps, mode="gaussian", sigma_scale=0.125))
    assert w.min().item() >= 1e-3


def test_window_starts_by_hand():
    assert window_starts((128, 100, 64), (64, 64, 64), 0.5) == [[0, 32, 64], [0, 32, 36], [0]]
    assert window_starts((10, 11, 3), (4, 4, 3), 0.5) == [[0, 2, 4, 6], [0, 2, 4, 6, 7], [0]]


# ---------------------------------------------------------------- TTA and ensembling
def sym_net(seed, cin=2, cout=3):
    torch.manual_seed(seed)
    head, blur = torch.nn.Conv3d(cin, cout, 1), torch.nn.Conv3d(cout, cout, 3, padding=1, groups=cout, bias=False)
    with torch.no_grad():
        k = torch.rand(cout, 1, 3, 3, 3); blur.weight.copy_(sum(k.flip([d + 2 for d in f]) for f in flip_sets([0, 1, 2])))
    return torch.nn.Sequential(head, blur).eval()


def test_tta_with_flip_equivariant_net_gives_plain_result():
    x = torch.randn(2, 20, 16, 8, generator=torch.Generator().manual_seed(0))   # symmetric window placement on every axis
    net = sym_net(3)
    plain = predict_volume(net, x, (8, 8, 8))
    for axes in ([0], [1, 2], [0, 1, 2]):
        torch.testing.assert_close(predict_volume(net, x, (8, 8, 8), tta_axes=axes), plain, rtol=1e-5, atol=1e-5)  # float32 sums in another order
    assert len(flip_sets([0, 1, 2])) == 8


def test_tta_is_mean_over_flips():
    "With a net that is not equivariant, TTA equals the mean over the 4 flips of axes (0, 2), computed by hand."
    net, x = conv_net(seed=5), torch.randn(2, 12, 10, 9)
    ref = []
    for f in [(), (2,), (4,), (2, 4)]:
        y = sliding_window(net, x[None].flip(f) if f else x[None], (8, 8, 8), act="softmax")
        ref.append(y.flip(f) if f else y)
    torch.testing.assert_close(predict_volume(net, x, (8, 8, 8), tta_axes=[0, 2]), torch.stack(ref).mean(0)[0])


def test_ensemble_is_mean_of_probabilities():
    x, a, b, c = torch.randn(2, 14, 9, 10), conv_net(seed=1), conv_net(seed=2), conv_net(seed=3)
    ps = (8, 8, 8)
    each = [predict_volume(n, x, ps, act="sigmoid") for n in (a, b, c)]
    torch.testing.assert_close(predict_volume([a, b, c], x, ps, act="sigmoid"), sum(each) / 3)
    logits = [predict_volume(n, x, ps, act=None) for n in (a, b)]
    torch.testing.assert_close(predict_volume([a, b], x, ps, act=None), (logits[0] + logits[1]) / 2)


# ---------------------------------------------------------------- regions -> labels
def brats_rule(wt, tc, et, t_wt=0.45, t_tc=0.4, t_et=0.45):
    "The BraTS rule written out as in the task: WT else 0, then TC else 2, then ET -> 3 else 1."
    out = np.where(wt >= t_wt, 2, 0)
    out = np.where((out > 0) & (tc >= t_tc), 1, out)
    out = np.where((out == 1) & (et >= t_et), 3, out)
    return out


def test_brats_rule_on_hand_built_maps():
    p = np.array([[0.9, 0.9, 0.9, 0.44, 0.9, 0.46, 0.45],
                  [0.9, 0.5, 0.1, 0.9, 0.39, 0.40, 0.40],
                  [0.9, 0.3, 0.1, 0.9, 0.9, 0.44, 0.45]], np.float32)[:, :, None, None]
    assert regions_to_labels(p, BRATS).ravel().tolist() == [3, 1, 2, 0, 2, 1, 3]
    rng = np.random.default_rng(0)
    q = rng.random((3, 12, 11, 10)).astype(np.float32)
    np.testing.assert_array_equal(regions_to_labels(q, BRATS), brats_rule(*q))
    thr = {"WT": 0.3, "TC": 0.6, "ET": 0.7}
    np.testing.assert_array_equal(regions_to_labels(q, BRATS, thr), brats_rule(*q, 0.3, 0.6, 0.7))
    # the regions' order in the plan does not matter
    np.testing.assert_array_equal(regions_to_labels(q[::-1].copy(), {"ET": [3], "TC": [1, 3], "WT": [1, 2, 3]}), brats_rule(*q))
    assert region_thresholds({"WT": [1], "organ": [2]}) == {"WT": 0.45, "organ": 0.5}


def test_generic_nested_regions():
    "Kidney {1,2} > tumour {2}: 0.5 thresholds, tumour only inside kidney."
    p = np.array([[0.9, 0.9, 0.2], [0.2, 0.8, 0.9]], np.float32)[:, :, None, None]
    assert regions_to_labels(p, {"kidney": [1, 2], "tumour": [2]}).ravel().tolist() == [1, 2, 0]


def test_labels_of_maps_channels_to_values():
    out = torch.tensor([[0.1, 0.8, 0.3], [0.7, 0.1, 0.3], [0.2, 0.1, 0.4]])[:, :, None, None]
    assert labels_of(out, [0, 2, 5]).ravel().tolist() == [2, 0, 5]


def test_resample_torch_matches_simpleitk_linear():
    "Same-centre linear resampling in torch equals SimpleITK's inside the image."
    rng = np.random.default_rng(1)
    a = rng.random((10, 9, 7)).astype(np.float32)
    sp_in, size_out, sp_out = (2.0, 1.5, 3.0), [20, 13, 21], (1.0, 1.0, 1.0)
    img = from_xyz(a, spacing=sp_in, origin=(0, 0, 0))
    n0, s0, n1, s1 = np.array(a.shape), np.array(sp_in), np.array(size_out), np.array(sp_out)
    origin = (n0 - 1) * s0 / 2 - (n1 - 1) * s1 / 2
    ref = to_xyz(sitk.Resample(img, size_out, sitk.Transform(), sitk.sitkLinear, origin.tolist(), sp_out, img.GetDirection(), 0.0))
    got = resample_torch(torch.from_numpy(a)[None], sp_in, size_out, sp_out)[0].numpy()
    # compare where every output point lies inside the source grid (SimpleITK pads with 0 outside)
    inside = [slice(int(np.ceil(-o / s)), int(np.floor(((n - 1) * si - o) / s)) + 1) for o, s, n, si in zip(origin, s1, n0, s0)]
    np.testing.assert_allclose(got[tuple(inside)], ref[tuple(inside)], atol=1e-5)


# ---------------------------------------------------------------- experiment with a hand-made checkpoint
def hand_experiment(tmp_path, phantom_dj, regions=True, folds=(0,), spacing=(1.5, 1.5, 2.0)):
    "A plan and random-weight checkpoints written as segcook.train does (CONTRACTS.md, Checkpoints)."
    from segcook.data import load_dataset
    ds = load_dataset(phantom_dj)
    p = Plan()
    p.dataset.dataset_json = str(phantom_dj)
    p.channels = [Channel(n, m, use_nonzero=True) for n, m in ds.channels]
    p.labels.labels, p.labels.final_classes, p.labels.names = list(ds.labels), dict(ds.final_classes), dict(ds.label_names)
    p.labels.regions = dict(ds.regions) if regions else None
    p.spatial.target_spacing, p.spatial.patch_size = list(spacing), [16, 16, 16]
    p.train.arch_kwargs = {"base": 4, "max_width": 8, "max_pools": 2}
    p.infer.tta_axes = [0]
    exp = tmp_path/"exp"; save_plan(p, exp/"config.json")
    for k in folds:
        torch.manual_seed(k)
        net = build_net(p)
        d = exp/"models"/f"fold_{k}"; d.mkdir(parents=True)
        torch.save({"format": "segcook-ckpt-1", "plan": plan_to_dict(p), "model": net.state_dict(), "epoch": 0,
                    "best_score": 0.0, "fold": k}, d/"best.pt")
    return exp


@pytest.fixture(scope="module")
def oblique(tmp_path_factory):
    "A 2-case BraTS phantom with anisotropic spacing and a flipped x axis (tests reorientation and resampling)."
    return make_phantom(tmp_path_factory.mktemp("obl"), cases=1, size=(26, 22, 12), spacing=(1.0, 1.2, 2.5),
                        direction=(-1, 0, 0, 0, 1, 0, 0, 0, 1), seed=4, test_cases=2)


def _src(dj, cid, ch="t1"):
    return next((Path(dj).parent/"test"/cid).glob(f"*_{ch}.nii.gz"))


def test_predict_header_labels_and_resume(tmp_path, oblique):
    exp = hand_experiment(tmp_path, oblique)
    out = tmp_path/"pred"
    done = predict(exp, oblique, out, device="cpu")
    assert [p.name for p in done] == ["brats_test_000.nii.gz", "brats_test_001.nii.gz"]
    for p in done:
        src = _src(oblique, p.name.split(".")[0])
        assert compare_headers(p, src, spacing_rtol=0, origin_atol_mm=0, direction_atol=0) == []   # exact header
        pred = read_image(p)
        assert pred.GetSize() == read_image(src).GetSize()
        assert set(np.unique(to_xyz(pred))) <= {0, 1, 2, 3}
    rows = (out/"timing.csv").read_text().splitlines()
    assert rows[0].startswith("id,seconds,peak_rss_mib") and len(rows) == 3
    assert float(rows[1].split(",")[1]) > 0 and rows[1].split(",")[5] == "2"   # 2 TTA passes (flips of axis 0)
    # resumable: finished cases are skipped; a removed one is redone; a stale temp file is not a result
    mtimes = {p: p.stat().st_mtime_ns for p in done}
    done[1].unlink(); (out/".brats_test_001.nii.gz.abc.tmp.nii.gz").write_bytes(b"half")
    again = predict(exp, oblique, out, device="cpu")
    assert again == done and done[0].stat().st_mtime_ns == mtimes[done[0]] and done[1].exists()
    assert read_image(done[1]).GetSize() == read_image(_src(oblique, "brats_test_001")).GetSize()
    predict(exp, oblique, out, device="cpu", overwrite=True)
    assert done[0].stat().st_mtime_ns != mtimes[done[0]]


def test_predict_fast_and_probs(tmp_path, oblique):
    "Fast mode (torch resampling) agrees with the accurate path on most voxels; probabilities are written."
    exp = hand_experiment(tmp_path, oblique, regions=False, folds=(0, 1))
    acc = predict(exp, oblique, tmp_path/"acc", tta=False, probs="nifti", device="cpu")
    fast = predict(exp, oblique, tmp_path/"fast", fast=True, probs=True, device="cpu")
    for a, f in zip(acc, fast):
        la, lf = to_xyz(read_image(a)), to_xyz(read_image(f))
        assert la.shape == lf.shape and (la == lf).mean() > 0.9
        assert compare_headers(f, _src(oblique, f.name.split(".")[0])) == []
        cid = a.name.split(".")[0]
        z = np.load(tmp_path/"fast"/f"{cid}_probs.npz")
        assert z["probs"].shape == (4, *lf.shape) and list(z["names"]) == ["background", "NCR", "ED", "ET"]
        np.testing.assert_allclose(z["probs"].sum(0), 1, atol=1e-4)
        assert (z["probs"].argmax(0) == lf).mean() > 0.99
        pr = [to_xyz(read_image(tmp_path/"acc"/f"{cid}_prob_{n}.nii.gz")) for n in ["background", "NCR", "ED", "ET"]]
        np.testing.assert_array_equal(np.argmax(pr, 0), la)
        assert compare_headers(tmp_path/"acc"/f"{cid}_prob_ET.nii.gz", _src(oblique, cid)) == []
    row = (tmp_path/"fast"/"timing.csv").read_text().splitlines()[1].split(",")
    assert row[4:7] == ["2", "1", "1"]  # 2 models, 1 pass, fast


def test_inputs_csv_folder_and_errors(tmp_path, oblique):
    exp = hand_experiment(tmp_path, oblique)
    from segcook.core import load_plan
    plan = load_plan(exp)
    names = [c.name for c in plan.channels]
    from_json = find_inputs(oblique, plan)
    assert [c for c, _ in from_json] == ["brats_test_000", "brats_test_001"]
    assert find_inputs(Path(oblique).parent/"test", plan) == from_json           # patient folders, plan's patterns
    csvp = tmp_path/"paths.csv"
    csvp.write_text("id," + ",".join(names) + "\n" + "\n".join(f"{c}," + ",".join(str(ims[n]) for n in names) for c, ims in from_json) + "\n")
    assert find_inputs(csvp, plan) == from_json
    bad = tmp_path/"bad.csv"; bad.write_text("id,t1\nx,a.nii.gz\n")
    with pytest.raises(SegcookError, match=r"bad.csv: missing column\(s\)"): find_inputs(bad, plan)
    with pytest.raises(SegcookError, match="inside the input data folder"):
        predict(exp, oblique, Path(oblique).parent/"test"/"preds", device="cpu")
    with pytest.raises(SegcookError, match=r"no best.pt for fold\(s\) \[3\]"):
        predict(exp, oblique, tmp_path/"o", folds=[3], device="cpu")
    assert not (Path(oblique).parent/"test"/"preds").exists()


def test_flat_folder_nnunet_names(tmp_path, oblique):
    exp = hand_experiment(tmp_path, oblique)
    from segcook.core import load_plan
    plan = load_plan(exp)
    flat = tmp_path/"flat"; flat.mkdir()
    for c, ims in find_inputs(oblique, plan):
        for i, p in enumerate(ims.values()): os.symlink(p, flat/f"{c}_{i:04d}.nii.gz")
    got = find_inputs(flat, plan)
    assert [c for c, _ in got] == ["brats_test_000", "brats_test_001"] and list(got[0][1]) == [c.name for c in plan.channels]
    os.remove(flat/"brats_test_001_0003.nii.gz")
    with pytest.raises(SegcookError, match="brats_test_001"): find_inputs(flat, plan)


def test_cli_predict(tmp_path, oblique):
    exp = hand_experiment(tmp_path, oblique)
    assert cli_predict(["--exp", str(exp), "--input", str(oblique), "--out", str(tmp_path/"c"), "--fast", "--device", "cpu", "--stitch-device", "cpu"]) == 0
    assert sorted(p.name for p in (tmp_path/"c").glob("*.nii.gz")) == ["brats_test_000.nii.gz", "brats_test_001.nii.gz"]
    assert cli_predict(["--exp", str(exp), "--input", str(tmp_path/"nope.csv"), "--out", str(tmp_path/"d")]) == 2
    assert cli_predict(["--exp", str(exp)]) == 2
    r = subprocess.run(segcook_cmd("predict", "--help"), capture_output=True, text=True)
    assert r.returncode == 0 and "--oof" in r.stdout


# ---------------------------------------------------------------- end to end with the real stages
@pytest.mark.slow
def test_end_to_end_phantom(tmp_path):
    "phantom -> analyze -> preprocess -> 1 tiny epoch -> predict (test set and out-of-fold)."
    from segcook.analysis import analyze
    from segcook.preprocess import preprocess
    from segcook.train import train
    dj = make_phantom(tmp_path/"data", cases=4, size=(40, 36, 24), spacing=(1.2, 1.0, 2.0),
                      direction=(-1, 0, 0, 0, 1, 0, 0, 0, 1), seed=1, test_cases=1)
    exp = tmp_path/"exp"
    analyze(dj, exp, nfolds=2, workers=1, patch_size=(16, 16, 16))
    preprocess(exp, workers=1)
    train(exp, folds=[0, 1], epochs=1, steps_per_epoch=1, batch_size=1,
          **{"train.arch_kwargs": {"base": 4, "max_width": 8, "max_pools": 2}})   # a tiny net, recorded in the checkpoints
    assert available_folds(exp) == [0, 1]
    done = predict(exp, dj, tmp_path/"pred", device="cpu")
    assert len(done) == 1
    assert compare_headers(done[0], _src(dj, "brats_test_000")) == []
    assert set(np.unique(to_xyz(read_image(done[0])))) <= {0, 1, 2, 3}
    oof = predict_oof(exp, device="cpu")
    assert sorted(p.name.split(".")[0] for p in oof) == [f"brats_{i:03d}" for i in range(4)]
    assert all(p.parent == exp/"predictions"/"oof" for p in oof)
    for p in oof:
        cid = p.name.split(".")[0]
        assert compare_headers(p, next((Path(dj).parent/"train"/cid).glob("*_t1.nii.gz"))) == []
    t0 = {p: p.stat().st_mtime_ns for p in oof}
    assert cli_predict(["--exp", str(exp), "--oof", "--device", "cpu"]) == 0       # finished: all skipped
    assert all(p.stat().st_mtime_ns == t0[p] for p in oof)
