"The 2d configuration (slices along one axis) and class-probability patch sampling: plan, network, sampling, CLI end to end."
import importlib.util, math, os, time
from pathlib import Path
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from torch import nn
from segcook.core import SegcookError, Plan, load_plan, save_plan, override, validate_plan, read_image, write_image
from segcook.data import make_phantom, cli_phantom
from segcook.analysis import analyze, cli_analyze, slice_axis_for, batch_size_2d
from segcook.preprocess import cli_preprocess, case_spacing
from segcook.train import cli_train, GlobalBatchLoader
from segcook.inference import cli_predict
from segcook.nets import build_net, get_topology
from segcook.loader import sampler_of, resolve_sample_probs, patch_start, CentreSampler

torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


def _binomial_ok(count, n, p, z=4.0):
    "Whether `count` successes in `n` draws agree with probability `p` within `z` binomial standard deviations."
    return abs(count - n * p) <= z * math.sqrt(n * p * (1 - p)) + 1e-9


@pytest.fixture(scope="module")
def ct(tmp_path_factory):
    "A tiny anisotropic CT phantom (z is the coarse axis)."
    root = tmp_path_factory.mktemp("twod")
    assert cli_phantom(["--out", str(root/"data"), "--cases", "4", "--test-cases", "1", "--kind", "ct",
                        "--size", "32", "32", "10", "--spacing", "1", "1", "3", "--workers", "1"]) == 0
    return root


def test_plan_and_network_are_2d(ct, tmp_path):
    "The 2d plan has patch 1 on the slice axis; every conv/pool of the network has kernel and stride 1 there."
    exp = tmp_path/"exp"
    assert cli_analyze(["--data", str(ct/"data"/"dataset.json"), "--exp", str(exp), "--nfolds", "2", "--workers", "1", "--config", "2d"]) == 0
    plan = load_plan(exp)
    assert (plan.spatial.config, plan.spatial.slice_axis) == ("2d", 2)        # the coarsest axis (3 mm)
    ps = plan.spatial.patch_size
    assert ps[2] == 1 and ps[0] == ps[1] in (16, 32)            # a power of two <= the median in-plane (cropped) size
    assert plan.spatial.target_spacing == [1.0, 1.0, 3.0]
    assert batch_size_2d([32, 32, 8], [32, 32, 1]) == 16 and batch_size_2d([16, 16, 8], [16, 16, 1], 2, 8) == 8   # 2 x 8 slices, capped
    assert 2 <= plan.train.batch_size <= 32 and plan.infer.sw_batch_size == plan.train.batch_size
    assert plan.infer.tta_axes == [0, 1]                            # no flip across slices
    for arch in ("nnunet", "unet", "nnunet_resenc", "stunet_s"):
        net = build_net(override(plan, **{"train.arch": arch, "train.arch_kwargs": {"base": 4}}))
        convs = [m for m in net.modules() if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d, nn.MaxPool3d, nn.AvgPool3d))]
        assert convs
        for m in convs:
            k = tuple(m.kernel_size) if isinstance(m.kernel_size, (tuple, list)) else (m.kernel_size,) * 3
            s = tuple(m.stride) if isinstance(m.stride, (tuple, list)) else (m.stride,) * 3
            assert k[2] == 1 and s[2] == 1, (arch, m)
        assert any(isinstance(m, nn.Conv3d) and m.kernel_size == (3, 3, 1) for m in convs)
        net.eval()
        with torch.no_grad(): assert net(torch.zeros(1, 1, *ps)).shape == (1, 4, *ps)
    with pytest.raises(SegcookError, match="cannot run the 2d configuration"): build_net(override(plan, **{"train.arch": "mednext_s"}))
    # y as the slice axis, from the CLI name
    assert cli_analyze(["--data", str(ct/"data"/"dataset.json"), "--exp", str(tmp_path/"y"), "--nfolds", "2", "--workers", "1",
                        "--config", "2d", "--slice-axis", "y"]) == 0
    py = load_plan(tmp_path/"y")
    assert py.spatial.slice_axis == 1 and py.spatial.patch_size[1] == 1
    k, st = get_topology(py.spatial.patch_size, py.spatial.target_spacing)
    assert all(x[1] == 1 for x in k + st) and st[1] == [2, 1, 1]     # z (3 mm) is coarse in-plane: x pools first


def test_bad_2d_inputs(ct, tmp_path):
    "Wrong config, slice axis or plan fields: clear errors."
    dj = str(ct/"data"/"dataset.json")
    assert cli_analyze(["--data", dj, "--exp", str(tmp_path/"a"), "--slice-axis", "z"]) == 2          # axis without 2d
    with pytest.raises(SegcookError, match="slice axis should be"): analyze(dj, tmp_path/"b", config="2d", slice_axis=5)
    with pytest.raises(SegcookError, match="config should be"): analyze(dj, tmp_path/"c", config="2.5d")
    with pytest.raises(SegcookError, match="should be 1 on the slice axis"):
        override(Plan(), **{"spatial.config": "2d", "spatial.slice_axis": 2, "spatial.patch_size": [32, 32, 8]})
    with pytest.raises(SegcookError, match="slice_axis should be 0, 1 or 2"): override(Plan(), **{"spatial.config": "2d"})
    assert slice_axis_for([[1, 1, 1]]) == 2 and slice_axis_for([[0.5, 2, 0.5]]) == 1
    p = override(Plan(), **{"spatial.config": "2d", "spatial.slice_axis": 2, "spatial.target_spacing": [1.0, 1.0, 3.0],
                            "spatial.patch_size": [32, 32, 1]})
    assert case_spacing(p, [0.9, 0.9, 4.5]) == [1.0, 1.0, 4.5]                      # native across slices


def _as_input(ct, folder):
    "The phantom's test case written with a new origin, direction (x flipped) and spacing, as a flat input folder."
    import json
    d = json.loads((ct/"data"/"dataset.json").read_text())
    src = sorted((ct/"data").rglob("*.nii.gz"))
    img = [p for p in src if "test" in str(p) and "label" not in p.name and "seg" not in p.name][0]
    im = read_image(img)
    im.SetOrigin((12.5, -30.0, 7.0)); im.SetDirection((-1, 0, 0, 0, 1, 0, 0, 0, 1)); im.SetSpacing((0.9, 0.9, 3.3))
    folder.mkdir(parents=True)
    write_image(im, folder/"case_a.nii.gz")
    return folder/"case_a.nii.gz"


def test_2d_end_to_end_cli(ct, tmp_path):
    "analyze --config 2d, preprocess, train (1 epoch), predict through the CLI; the prediction has the input's native geometry."
    exp, dj = tmp_path/"exp", str(ct/"data"/"dataset.json")
    assert cli_analyze(["--data", dj, "--exp", str(exp), "--nfolds", "2", "--workers", "1", "--config", "2d"]) == 0
    plan = load_plan(exp)
    save_plan(override(plan, **{"train.arch_kwargs": {"base": 4}}), exp/"config.json")      # a tiny network
    assert cli_preprocess(["--exp", str(exp), "--workers", "1"]) == 0
    assert cli_train(["--exp", str(exp), "--folds", "0", "--epochs", "1", "--steps-per-epoch", "2", "--loader", "global"]) == 0
    if importlib.util.find_spec("nvidia.dali"):                     # the DALI loader too, with class probabilities and 2d rotation
        assert cli_train(["--exp", str(exp), "--folds", "1", "--epochs", "1", "--steps-per-epoch", "2", "--loader", "dali",
                          "--sample-probs", "1=0.4", "2=0.3", "background=0.3"]) == 0
    assert cli_train(["--exp", str(exp), "--folds", "1", "--epochs", "1", "--sample-probs", "lung=1", "--overwrite"]) == 2
    src = _as_input(ct, tmp_path/"in")
    assert cli_predict(["--exp", str(exp), "--input", str(src.parent), "--out", str(tmp_path/"pred"), "--fast"]) == 0
    out = read_image(tmp_path/"pred"/"case_a.nii.gz"); ref = read_image(src)
    assert out.GetSize() == ref.GetSize()
    np.testing.assert_allclose(out.GetSpacing(), ref.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(out.GetOrigin(), ref.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(out.GetDirection(), ref.GetDirection(), atol=1e-6)


def _volume():
    "Synthetic labels: 0 background, 1 'liver' block, 2 'tumour' inside it, 9 unannotated (ignore) outside slices 3, 10, 17 along z."
    v = np.zeros((24, 24, 20), np.uint8)
    v[4:20, 4:20, 2:18] = 1; v[9:13, 9:13, 6:14] = 2
    sp = np.full_like(v, 9); sp[..., [3, 10, 17]] = v[..., [3, 10, 17]]
    return v, sp

LAB = {"labels.labels": [0, 1, 2], "labels.names": {"liver": 1, "tumour": 2}}


def test_class_probability_frequencies():
    "2000 centres under 50/30/20: each class's count is within 4 binomial standard deviations of n*p (real sampler, no mocks)."
    v, _ = _volume()
    req = {"liver": 0.5, "tumour": 0.3, "background": 0.2}
    plan = override(Plan(), **LAB, **{"train.sample_probs": req})
    n = 2000
    c = sampler_of(v, plan).draw(np.random.default_rng(0), n)
    counts = np.bincount(v[tuple(c.T)], minlength=3)
    for lab, p in ((1, 0.5), (2, 0.3), (0, 0.2)): assert _binomial_ok(counts[lab], n, p), (counts, lab, p)
    # a class absent from the case: its share is renormalised over the others (0.5 / 0.7 liver, 0.2 / 0.7 background)
    v2 = np.where(v == 2, 1, v).astype(np.uint8)
    c2 = sampler_of(v2, plan).draw(np.random.default_rng(1), n)
    k2 = np.bincount(v2[tuple(c2.T)], minlength=3)
    assert k2[2] == 0 and _binomial_ok(k2[1], n, 0.5 / 0.7) and _binomial_ok(k2[0], n, 0.2 / 0.7), k2
    # by label value and with the unannotated key on sparse labels
    _, sp = _volume()
    p3 = override(Plan(), **LAB, **{"labels.ignore_label": 9, "train.sample_probs": {"2": 0.6, "unannotated": 0.4}})
    c3 = sampler_of(sp, p3).draw(np.random.default_rng(2), n)
    k3 = np.bincount(sp[tuple(c3.T)], minlength=10)
    assert k3[0] == k3[1] == 0 and _binomial_ok(k3[2], n, 0.6) and _binomial_ok(k3[9], n, 0.4), k3


def test_2d_ignore_label_draws_annotated_slices_only(tmp_path):
    "With sparse labels (3 annotated z slices), 2d sampling (oversampling and class probabilities) stays on those slices; 3d does not."
    _, sp = _volume()
    base = override(Plan(), **LAB, **{"labels.ignore_label": 9, "spatial.config": "2d", "spatial.slice_axis": 2,
                                      "spatial.patch_size": [16, 16, 1], "train.oversampling": 0.33})
    for plan in (base, override(base, **{"train.sample_probs": {"liver": 0.5, "unannotated": 0.5}})):
        z = sampler_of(sp, plan).draw(np.random.default_rng(3), 1000)[:, 2]
        assert set(z.tolist()) == {3, 10, 17}
    three = override(Plan(), **LAB, **{"labels.ignore_label": 9, "train.sample_probs": {"unannotated": 1.0}})
    assert len(set(sampler_of(sp, three).draw(np.random.default_rng(4), 300)[:, 2].tolist())) > 3
    # through the training loader: every 2d patch comes from an annotated slice
    d = tmp_path/"pre"/"c0"; d.mkdir(parents=True)
    img = np.zeros((1, *sp.shape), np.float32); img[0] = np.arange(sp.shape[2])[None, None, :]   # intensity = z index
    np.save(d/"image.npy", img); np.save(d/"label.npy", sp[None]); (d/"meta.json").write_text("{}")
    dl = GlobalBatchLoader([d], base, batch_size=8, seed=0, steps=5)
    zs = {float(b["image"][i, 0, 0, 0, 0]) for b in dl for i in range(8)}
    assert zs <= {3.0, 10.0, 17.0} and len(zs) > 1


def test_dali_loader_samples_annotated_slices(tmp_path):
    "The DALI loader with a 2d sparse plan: patches come from annotated slices only (external-source anchors)."
    pytest.importorskip("nvidia.dali")
    from segcook.loader import make_train_loader, Augment
    _, sp = _volume()
    d = tmp_path/"pre"/"c0"; d.mkdir(parents=True)
    img = np.zeros((1, *sp.shape), np.float32); img[0] = np.arange(sp.shape[2])[None, None, :] + 1
    np.save(d/"image.npy", img); np.save(d/"label.npy", sp[None]); (d/"meta.json").write_text("{}")
    plan = override(Plan(), **LAB, **{"labels.ignore_label": 9, "spatial.config": "2d", "spatial.slice_axis": 2,
                                      "spatial.patch_size": [16, 16, 1], "train.sample_probs": {"liver": 0.5, "background": 0.5}})
    dl = make_train_loader([d], plan, batch_size=4, seed=0, steps=3, aug=Augment.off(), num_threads=1)
    bs = list(dl)
    assert bs[0]["image"].shape == (4, 1, 16, 16, 1)
    zs = {float(b["image"][i, 0, 8, 8, 0]) for b in bs for i in range(4)}
    assert zs <= {4.0, 11.0, 18.0} and len(zs) > 1
    labs = torch.cat([b["label"].flatten() for b in bs])
    assert (labs != 9).any()


def test_sample_probs_bad_inputs(tmp_path):
    "Unknown key, negative value, zero sum, 'unannotated' without an ignore label: errors naming the valid keys; CLI flag parsing."
    for bad, msg in (({"lung": 1.0}, "valid keys"), ({"liver": -0.1}, ">= 0"), ({"liver": 0.0, "background": 0}, "sum to 0"),
                     ({"unannotated": 1.0}, "valid keys: \\['0', '1', '2', 'background', 'liver', 'tumour'\\]")):
        with pytest.raises(SegcookError, match=msg): override(Plan(), **LAB, **{"train.sample_probs": bad})
    p = override(Plan(), **LAB, **{"train.sample_probs": {"liver": 2, "1": 1, "0": 1}})
    assert resolve_sample_probs(p) == {1: 3.0, "background": 1.0}
    assert patch_start([0, 5, 30], [10, 10, 40], [4, 4, 8]) == [0, 3, 26]
    assert patch_start([3, 3, 3], [4, 10, 10], [8, 4, 4]) == [-2, 1, 1]
    from segcook.train import _sample_probs_arg
    assert _sample_probs_arg(["liver=0.5", "background=0.5"]) == {"liver": 0.5, "background": 0.5}
    with pytest.raises(SegcookError, match="KEY=PROBABILITY"): _sample_probs_arg(["liver0.5"])
