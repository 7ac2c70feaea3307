"segcook sparse: selection under a budget, simulated sparse labels, interpolation, the ignore label in the loss, IoU."
import hashlib, json
from pathlib import Path
import numpy as np, pandas as pd, pytest, torch
import SimpleITK as sitk
from segcook.core import SegcookError, from_xyz, to_xyz, write_image, read_image, write_json
from segcook.data import make_phantom, load_dataset, check_dataset, cli_check
from segcook.sparse import select, simulate, interpolate, cli_sparse
from segcook.cli import main
from segcook.analysis import analyze
from segcook.losses import build_loss
from segcook.nets import n_output_channels
from segcook.evaluate import evaluate

L, M = 24, 5          # slices along z in the phantom; 0.2 * 24 = 4.8 -> 5 slices per volume


def _digest(folder:Path) -> dict:
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    return make_phantom(tmp_path_factory.mktemp("sp")/"ph", cases=10, size=(32, 32, L), seed=5, workers=2)


@pytest.fixture(scope="module")
def derived(src, tmp_path_factory):
    "`segcook sparse select` on the phantom (through the top-level CLI); the source's digest before and after."
    out = tmp_path_factory.mktemp("sel")/"sparse"
    before = _digest(src.parent)
    rc = main(["sparse", "select", "--data", str(src), "--density", "0.2", "--volumes", "0.5", "--policy", "fixed",
               "--axis", "auto", "--seed", "0", "--out", str(out)])
    assert rc == 0
    return out, before, _digest(src.parent)


def test_select_budget_and_simulation(src, derived):
    out, before, after = derived
    assert before == after                       # the source is byte-identical (and untouched)
    sel = pd.read_csv(out/"slices.csv")
    assert list(sel.columns) == ["case", "axis", "slice"] and set(sel.axis) == {"z"}   # isotropic: auto -> z
    counts = sel.groupby("case").size()
    assert len(counts) == 5 and set(counts) == {M}
    for _, g in sel.groupby("case"):
        d = np.diff(sorted(g.slice))
        assert d.max() - d.min() <= 1 and abs(d.mean() - L / M) < 0.5     # equally spaced, one every 4.8 slices
        assert g.slice.min() < L / M and g.slice.max() >= L - L / M       # spread over the whole volume
    assert (out/"slices.png").stat().st_size > 1000
    assert check_dataset(out/"dataset.json") == [] and cli_check(["--data", str(out/"dataset.json")]) == 0
    ds, dense = load_dataset(out/"dataset.json"), {c.id: c for c in load_dataset(src).cases()}
    assert ds.ignore_label == 4 and sorted(c.id for c in ds.cases()) == sorted(counts.index)
    for c in ds.cases():
        a, t = to_xyz(read_image(c.label)), to_xyz(read_image(dense[c.id].label))
        keep = sorted(sel[sel.case == c.id].slice)
        rest = [z for z in range(L) if z not in keep]
        assert (a[..., keep] == t[..., keep]).all() and (a[..., rest] == 4).all()
        assert sitk.ReadImage(str(c.label)).GetSpacing() == sitk.ReadImage(str(dense[c.id].label)).GetSpacing()
        for ch, p in c.images.items():
            assert p.read_bytes() == dense[c.id].images[ch].read_bytes()


def test_seeds_and_policies(src):
    for pol in ["fixed", "random", "ual"]:
        a, b = select(src, 0.2, 0.5, pol, seed=3), select(src, 0.2, 0.5, pol, seed=3)
        pd.testing.assert_frame_equal(a, b)
        assert set(a.groupby("case").size()) == {M} and not a.duplicated().any()
        assert a.slice.between(0, L - 1).all()
    assert set(select(src, 0.2, 0.5, seed=0).case) != set(select(src, 0.2, 0.5, seed=1).case)
    r0, r1 = select(src, 0.2, 1.0, "random", seed=0), select(src, 0.2, 1.0, "random", seed=1)
    assert not r0.equals(r1)
    assert len(select(src, 1.0, 0.1)) == L                      # 0.1 x 10 = 1 volume, every slice
    assert select(src, 0.2, 0.5, axis="x").axis.unique().tolist() == ["x"]


def test_auto_axis_is_the_coarsest(tmp_path):
    dj = make_phantom(tmp_path/"an", cases=2, kind="ct", size=(16, 12, 10), spacing=(1.0, 3.0, 1.0))
    s = select(dj, 0.5, 1.0)
    assert set(s.axis) == {"y"} and set(s.groupby("case").size()) == {6}   # 0.5 x 12 slices along y


def test_plan_gets_the_ignore_label_and_the_loss_ignores_it(derived, tmp_path):
    out = derived[0]
    plan = analyze(out/"dataset.json", tmp_path/"exp", nfolds=2)
    assert plan.labels.ignore_label == 4
    c = load_dataset(out/"dataset.json").cases()[0]
    t = torch.from_numpy(to_xyz(read_image(c.label)).astype(np.int64))[None, None]    # (1, 1, x, y, z)
    ign = (t == 4)
    assert ign.any() and (~ign).any()
    loss = build_loss(plan)
    nout = n_output_channels(plan)                                          # one per label: the plan's softmax head
    g = torch.Generator().manual_seed(0)
    x = torch.randn((1, nout, *t.shape[2:]), generator=g, requires_grad=True)
    l1 = loss(x, t); l1.backward()
    grad = x.grad.detach().clone()
    mask = ign.expand_as(x)
    assert (grad[mask] == 0).all() and (grad[~mask] != 0).any()       # exactly zero on unannotated voxels
    y = x.detach().clone(); y[mask] = torch.randn(int(mask.sum()), generator=g) * 10
    y.requires_grad_(True)
    l2 = loss(y, t); l2.backward()
    assert l2.item() == l1.item() and torch.equal(y.grad, grad)


def _ellipsoid_dataset(folder:Path, every:int=4):
    "An ellipsoid (semi-axes 11, 8, 13 voxels, written independently of segcook's helper), annotated every `every` slices."
    n = (36, 30, 34)
    x, y, z = np.meshgrid(*[np.arange(k) - (k - 1) / 2 for k in n], indexing="ij")
    e = ((x / 11) ** 2 + (y / 8) ** 2 + (z / 13) ** 2 <= 1).astype(np.uint8)
    sp = np.full_like(e, 2); ann = list(range(0, n[2], every)); sp[..., ann] = e[..., ann]
    img = e * 100.0 + np.random.default_rng(0).normal(0, 5, n)
    for sub, lab in (("dense", e), ("sparse", sp)):
        d = folder/sub/"train"/"ell"
        write_image(from_xyz(img.astype(np.float32), spacing=(1, 1, 1)), d/"ell_t1.nii.gz")
        write_image(from_xyz(lab, spacing=(1, 1, 1)), d/"ell_seg.nii.gz")
        write_json(folder/sub/"dataset.json", {"task": "ell", "images": {"t1": ["_t1."]}, "mask": ["_seg."], "labels": [0, 1],
                   "train-data": "train", **({"ignore-label": 2} if sub == "sparse" else {})})
    held = [k for k in ann if e[..., k].any()]
    return folder/"sparse"/"dataset.json", folder/"dense"/"dataset.json", e, slice(held[0], held[-1] + 1)


def _iou(a, b): return ((a != 0) & (b != 0)).sum() / ((a != 0) | (b != 0)).sum()


def test_contour_interpolation_of_an_ellipsoid(tmp_path):
    sparse, dense, e, rng = _ellipsoid_dataset(tmp_path)
    rc = cli_sparse(["interpolate", "--data", str(sparse), "--method", "contour", "--out", str(tmp_path/"ci"), "--truth", str(dense)])
    assert rc == 0
    ds = load_dataset(tmp_path/"ci"/"dataset.json")
    assert ds.ignore_label is None and check_dataset(ds) == []
    r = to_xyz(read_image(ds.cases()[0].label))
    assert _iou(e[..., rng], r[..., rng]) >= 0.9
    row = pd.read_csv(tmp_path/"ci"/"interpolation.csv").iloc[0]
    assert row.case == "ell" and row.annotated == 9 and row.iou == pytest.approx(_iou(e, r))


def test_propagation(tmp_path, src):
    "Algorithm 1 on the ellipsoid and on phantom cases."
    sparse, dense, e, rng = _ellipsoid_dataset(tmp_path)
    r = to_xyz(read_image(load_dataset(interpolate(sparse, "propagate", tmp_path/"pe")).cases()[0].label))
    assert _iou(e[..., rng], r[..., rng]) >= 0.85
    # phantom: 5 of 24 slices of two BraTS-like cases; the floor is the IoU of the nearest annotated slice copied
    # to each unannotated one (what an annotator's "copy the mask to the next slices" gives): propagation must beat it
    sel = select(src, 0.2, 0.2)
    sdj = simulate(src, sel, tmp_path/"sp")
    interpolate(sdj, "propagate", tmp_path/"pp", truth=src)
    res = pd.read_csv(tmp_path/"pp"/"interpolation.csv")
    dense_cases = {c.id: c for c in load_dataset(src).cases()}
    for _, row in res.iterrows():
        t = to_xyz(read_image(dense_cases[row.case].label))
        keep = np.array(sorted(sel[sel.case == row.case].slice))
        un = [z for z in range(L) if z not in keep]
        near = np.stack([t[..., keep[np.abs(keep - z).argmin()]] for z in un], -1)
        floor = _iou(t[..., un], near)
        assert row.iou_unannotated >= floor and row.iou_unannotated > 0.5, (row.case, row.iou_unannotated, floor)


def test_bad_input(src, tmp_path):
    for kw, msg in [(dict(density=0), "density should be a fraction"), (dict(density=1.2), "density should be a fraction"),
                    (dict(volumes=0), "volumes should be a fraction"), (dict(volumes=-1), "volumes should be a fraction"),
                    (dict(density=0.01), "rounds to no slice"), (dict(policy="smart"), "unknown slice selection policy"),
                    (dict(axis="w"), "unknown axis")]:
        with pytest.raises(SegcookError, match=msg): select(src, **{"density": 0.2, "volumes": 0.5, **kw})
    with pytest.raises(SegcookError, match=r"case '.*': density 0.01"): select(src, 0.01, 0.5)
    sel = select(src, 0.2, 0.5)
    for bad in (src.parent, src.parent/"train"/"x"):
        with pytest.raises(SegcookError, match="inside"): simulate(src, sel, bad)
    assert cli_sparse(["select", "--data", str(src), "--density", "0.2", "--volumes", "0.5", "--out", str(src.parent/"o")]) == 2
    assert not (src.parent/"o").exists()
    # an axis of length 1
    d = tmp_path/"flat"/"train"/"f0"
    write_image(from_xyz(np.ones((8, 8, 1), np.float32)), d/"f0_t1.nii.gz")
    write_image(from_xyz(np.zeros((8, 8, 1), np.uint8)), d/"f0_seg.nii.gz")
    write_json(tmp_path/"flat"/"dataset.json", {"task": "f", "images": {"t1": ["_t1."]}, "mask": ["_seg."], "labels": [0, 1], "train-data": "train"})
    with pytest.raises(SegcookError, match="case 'f0': 1 slice along z"): select(tmp_path/"flat"/"dataset.json", 0.5, 1.0, axis="z")
    # labels already holding the ignore value (the source's declared ignore-label 2 is used)
    sparse, dense, e, _ = _ellipsoid_dataset(tmp_path/"e")
    with pytest.raises(SegcookError, match="case 'ell': .* already holds the value 2"): simulate(sparse, select(sparse, 0.5, 1.0), tmp_path/"s2")
    # a case without any annotated slice
    lp = sparse.parent/"train"/"ell"/"ell_seg.nii.gz"
    write_image(from_xyz(np.full(e.shape, 2, np.uint8)), lp)
    for m in ("contour", "propagate"):
        with pytest.raises(SegcookError, match="case 'ell': .* has no annotated slice"): interpolate(sparse, m, tmp_path/f"i{m}")
    with pytest.raises(SegcookError, match="no ignore-label"): interpolate(dense, "contour", tmp_path/"i3")
    with pytest.raises(SegcookError, match="unknown interpolation method"): interpolate(sparse, "nearest", tmp_path/"i4")


def test_iou_metric_in_evaluate(tmp_path):
    from monai.metrics import compute_iou
    g = np.zeros((12, 10, 8), np.uint8); g[2:8, 2:7, 1:6] = 1; g[3:5, 3:5, 2:4] = 2
    p = np.roll(g, 1, axis=0)
    for a, nm in ((g, "gt"), (p, "pr")): write_image(from_xyz(a, spacing=(0.8, 1.0, 2.0)), tmp_path/f"{nm}.nii.gz")
    df = evaluate([("c0", tmp_path/"gt.nii.gz", tmp_path/"pr.nii.gz")], {"all": [1, 2], "core": [2]}, ["dice", "jaccard"], workers=1)   # jaccard: an alias of iou
    assert df.loc[0, "all_iou"] == pytest.approx(5 * 5 * 5 / (7 * 5 * 5))        # by hand: 5 of 6 rows shared, union 7
    for cls, lab in (("all", [1, 2]), ("core", [2])):
        ref = compute_iou(torch.from_numpy(np.isin(p, lab))[None, None].float(), torch.from_numpy(np.isin(g, lab))[None, None].float(), include_background=True)
        assert df.loc[0, f"{cls}_iou"] == pytest.approx(float(ref), rel=1e-6)
        d = df.loc[0, f"{cls}_dice"]
        assert df.loc[0, f"{cls}_iou"] == pytest.approx(d / (2 - d))


def test_unequal_lengths_use_the_median_clipped(tmp_path):
    "Volumes of 10, 20 and 30 slices: 0.5 x median 20 = 10 slices each, the 10-slice volume gives all it has."
    for i, nz in enumerate((10, 20, 30)):
        d = tmp_path/"u"/"train"/f"u{i}"
        write_image(from_xyz(np.random.default_rng(i).normal(size=(8, 8, nz)).astype(np.float32)), d/f"u{i}_t1.nii.gz")
    write_json(tmp_path/"u"/"dataset.json", {"task": "u", "images": {"t1": ["_t1."]}, "labels": [0, 1], "train-data": "train"})
    for pol in ("fixed", "random", "ual"):
        s = select(tmp_path/"u"/"dataset.json", 0.5, 1.0, pol)
        assert s.groupby("case").size().to_dict() == {"u0": 10, "u1": 10, "u2": 10}
        assert s[s.case == "u0"].slice.tolist() == list(range(10))
    rc = cli_sparse(["select", "--data", str(tmp_path/"u"/"dataset.json"), "--density", "0.5", "--volumes", "1", "--out", str(tmp_path/"o")])
    assert rc == 0 and (tmp_path/"o"/"slices.csv").exists() and not (tmp_path/"o"/"dataset.json").exists()   # no labels: no simulation
