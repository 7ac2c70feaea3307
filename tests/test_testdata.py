"tests/data: the crops keep what the real-scan tests need, and a fresh clone lacks nothing they read (or the test fails)."
import hashlib, subprocess, sys
from pathlib import Path
import numpy as np, pytest
import SimpleITK as sitk
from conftest import DATA, MNI_FILES, NOT_IN_TESTDATA, nilearn_mni, shared_data, fresh_clone_data
from segcook.core import Plan, Channel, Labels, Spatial, Preprocess
from segcook.preprocess import preprocess_case

sys.path.insert(0, str(DATA))
from make_crops import BOXES

PYR = DATA/"pyradiomics"
# the full scans, from ../shared/data/README.md: size, spacing (mm), labelled voxels, y axis flipped
FULL = {"lung1": ((512, 512, 48), (0.5703125, 0.5703125, 5.0), 837, False),
        "lung2": ((512, 512, 61), (0.6269531, 0.6269531, 5.0), 24644, False),
        "brain1": ((256, 256, 25), (0.78125, 0.78125, 6.5), 4137, True),
        "brain2": ((256, 256, 23), (0.78125, 0.78125, 6.5), 453, True),
        "breast1": ((45, 120, 21), (0.664062, 0.664062, 2.1), 143, False)}


@pytest.mark.parametrize("name", list(BOXES))
def test_crop_keeps_geometry_and_lesion(name):
    size, sp, nfg, flipped = FULL[name]
    box = BOXES[name]
    img, lbl = (sitk.ReadImage(str(PYR/f"{name}_{p}.nrrd")) for p in ("image", "label"))
    assert img.GetSize() == lbl.GetSize() == (size if box is None else tuple(b - a for a, b in zip(*box)))
    assert np.allclose(img.GetSpacing(), sp, rtol=1e-6) and lbl.GetSpacing() == img.GetSpacing()
    assert img.GetDirection() == lbl.GetDirection() == (1, 0, 0, 0, -1 if flipped else 1, 0, 0, 0, 1)
    assert img.GetPixelID() == sitk.sitkInt16
    if name.startswith("lung"): assert max(sp) / min(sp) > 3                           # anisotropic CT
    lab = sitk.GetArrayFromImage(lbl).transpose(2, 1, 0) > 0
    assert lab.sum() == nfg                                                            # the whole lesion
    if box is not None:
        idx = np.argwhere(lab)
        assert (idx.min(0)[:2] >= 30).all() and (np.array(img.GetSize())[:2] - idx.max(0)[:2] > 30).all()   # and surroundings
    full = shared_data()
    if full is not None:                                                               # voxel for voxel the real scan
        for p, im in (("image", img), ("label", lbl)):
            o = sitk.ReadImage(str(full/"pyradiomics"/f"{name}_{p}.nrrd"))
            start = [0, 0, 0] if box is None else list(box[0])
            roi = sitk.RegionOfInterest(o, im.GetSize(), start)
            assert np.array_equal(sitk.GetArrayViewFromImage(roi), sitk.GetArrayViewFromImage(im))
            assert np.allclose(im.GetOrigin(), o.TransformIndexToPhysicalPoint(start), atol=1e-4)
            assert o.GetPixelID() == im.GetPixelID() and o.GetDirection() == im.GetDirection()


# foreground boxes (start, stop) of the whole brain scans, as preprocess_case finds them (printed from ../shared/data)
WHOLE_FG = {"brain1": ([7, 0, 0], [251, 256, 25]), "brain2": ([22, 7, 0], [248, 256, 23])}

@pytest.mark.parametrize("name", ["brain1", "brain2"])
def test_brain_crop_on_the_grid_of_the_whole_scan(name):
    "The 0.7 mm grid preprocessing centres on the crop's foreground box has the same phase as on the whole scan's."
    s, t = FULL[name][1][0], 0.7
    def first(b0, b1):                         # first grid point (mm along the index axis): same centre, round(n s / t) points
        n1 = int(np.round((b1 - b0) * s / t)); return (b0 + b1 - 1) / 2 * s - (n1 - 1) / 2 * t
    plan = Plan(channels=[Channel(name="mr")], labels=Labels(labels=[0, 1]),
                spatial=Spatial(target_spacing=[t, t, 1.0], crop_to_foreground=True), preprocess=Preprocess())
    _, _, meta = preprocess_case({"mr": PYR/f"{name}_image.nrrd"}, plan, PYR/f"{name}_label.nrrd", cid=name)
    (x0, y0, _), _ = BOXES[name]
    c0, c1 = meta["crop"]["start"], meta["crop"]["stop"]
    w0, w1 = WHOLE_FG[name]
    for ax, off in ((0, x0), (1, y0)):
        d = (first(off + c0[ax], off + c1[ax]) - first(w0[ax], w1[ax])) % t
        assert min(d, t - d) < 1e-6, f"{name} axis {ax}: the crop's grid is {d:.3f} mm off the whole scan's"
    full = shared_data()
    if full is not None:
        _, _, whole = preprocess_case({"mr": full/"pyradiomics"/f"{name}_image.nrrd"}, plan,
                                      full/"pyradiomics"/f"{name}_label.nrrd", cid=name)
        assert [whole["crop"]["start"], whole["crop"]["stop"]] == [w0, w1]


def test_mni_from_nilearn():
    "nilearn's wheel ships the MNI152 files; with ../shared/data here, they are its bytes."
    d = nilearn_mni()
    assert d is not None, "nilearn (a dev extra) is not installed: `make install`"
    t1 = sitk.ReadImage(str(d/MNI_FILES[0]))
    assert t1.GetSize() == (197, 233, 189) and t1.GetSpacing() == (1.0, 1.0, 1.0)
    full = shared_data()
    if full is not None:
        for f in MNI_FILES:
            assert hashlib.sha256((d/f).read_bytes()).digest() == hashlib.sha256((full/"mni152"/f).read_bytes()).digest()


def test_fresh_clone_lacks_nothing(tmp_path):
    "Every folder of ../shared/data, and every file in it, is in the fresh-clone folder, or named in NOT_IN_TESTDATA."
    d = fresh_clone_data(tmp_path/"data")
    full = shared_data()
    names = sorted(p.name for p in full.iterdir() if p.is_dir()) if full else ["brats_metrics", "mni152", "pyradiomics", "stunet"]
    for n in names:
        if n in NOT_IN_TESTDATA: assert not (d/n).exists(); continue
        assert (d/n).is_dir(), f"{n}: in ../shared/data, not in tests/data nor NOT_IN_TESTDATA"
        if full is not None:
            missing = sorted(f.name for f in (full/n).iterdir() if not (d/n/f.name).is_file() and f.name != "UPSTREAM_README.md")
            assert missing == [], f"{n}: not in tests/data: {missing}"
    assert (d/"pyradiomics"/"LICENSE.txt").read_text().startswith("Copyright")


def test_skip_for_lack_of_data_fails(tmp_path):
    "A test that uses real data and skips fails (conftest's hook), unless the reason is a NOT_IN_TESTDATA one."
    conf = Path(__file__).with_name("conftest.py")
    (tmp_path/"conftest.py").write_text(
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('repo_conftest', {str(conf)!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "shared, pytest_runtest_makereport, shared_part = m.shared, m.pytest_runtest_makereport, m.shared_part\n")
    (tmp_path/"test_x.py").write_text(
        "import pytest\nfrom conftest import shared_part\n"
        "def test_lacks(shared): pytest.skip('scan not found')\n"
        "def test_by_design(shared): shared_part(shared, 'stunet')\n"
        "def test_other_skip(): pytest.skip('no GPU')\n")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfs", str(tmp_path)],
                       capture_output=True, text=True, cwd=tmp_path, env={**__import__("os").environ, "SEGCOOK_NO_SHARED": "1"})
    out = r.stdout
    assert "FAILED" in out and "test_lacks" in out and "skipped for lack of data although tests/data is here" in out, out
    assert "1 failed, 2 skipped" in out, out
