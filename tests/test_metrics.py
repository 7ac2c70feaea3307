"Agreement of segcook.metrics with DeepMind's surface-distance and with the official BraTS tables."
from pathlib import Path
import numpy as np, pandas as pd, pytest
from scipy import ndimage as ndi

if not hasattr(np, "Inf"): np.Inf = np.inf       # surface-distance 0.1 uses aliases removed in NumPy 2
if not hasattr(np, "NaN"): np.NaN = np.nan
import surface_distance as sd
from segcook.metrics import (surface_distances, hausdorff_pct, hausdorff, assd, nsd, dice, class_metrics,
                             case_metrics, brats_lesionwise, brats_config)
from segcook.core import read_image, to_xyz, SegcookError

from conftest import shared_data, DATA
GOLDEN = (shared_data() or DATA) / "brats_metrics"   # ../shared/data, else tests/data's copy (uint8 label maps, same voxels)

def _blobs(rng, shape, frac):
    f = ndi.gaussian_filter(rng.random(shape), rng.uniform(1.0, 3.0))
    return f > np.quantile(f, 1 - frac)

@pytest.mark.parametrize("seed", range(12))
def test_matches_deepmind_on_random_shapes(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(rng.integers(12, 40, 3))
    sp = tuple(rng.uniform(0.4, 3.0, 3))
    g, p = _blobs(rng, shape, rng.uniform(0.02, 0.3)), _blobs(rng, shape, rng.uniform(0.02, 0.3))
    if seed % 3 == 0: g[0] = True      # objects touching the array border
    ref = sd.compute_surface_distances(g, p, sp)
    s = surface_distances(g, p, sp)
    rel = lambda a, b: abs(a - b) / max(abs(b), 1e-12)
    assert rel(hausdorff_pct(s, 95), sd.compute_robust_hausdorff(ref, 95)) < 1e-6
    assert rel(hausdorff_pct(s, 50), sd.compute_robust_hausdorff(ref, 50)) < 1e-6
    assert rel(hausdorff(s), max(ref["distances_gt_to_pred"].max(), ref["distances_pred_to_gt"].max())) < 1e-6
    for tol in (0.5, 1.0, 2.5):
        assert rel(nsd(s, tol), sd.compute_surface_dice_at_tolerance(ref, tol)) < 1e-6
    a_ref = ((ref["distances_gt_to_pred"] * ref["surfel_areas_gt"]).sum() + (ref["distances_pred_to_gt"] * ref["surfel_areas_pred"]).sum()) \
            / (ref["surfel_areas_gt"].sum() + ref["surfel_areas_pred"].sum())
    assert rel(assd(s), a_ref) < 1e-6
    assert rel(dice(g, p), sd.compute_dice_coefficient(g, p)) < 1e-12
    assert np.isclose(s.a_gt.sum(), ref["surfel_areas_gt"].sum(), rtol=1e-9)

def test_empty_conventions():
    a = np.zeros((10, 20, 30), bool); b = a.copy(); b[3:6, 3:6, 3:6] = True
    sp = (1.0, 2.0, 0.5)
    diag = float(np.linalg.norm(np.multiply(a.shape, sp)))
    ms = ["dice", "haus95", "hausdorff", "avg_surf", "surf_dice"]
    assert class_metrics(a, a, sp, ms) == {"dice": 1.0, "haus95": 0.0, "hausdorff": 0.0, "avg_surf": 0.0, "surf_dice": 1.0}
    for x, y in ((a, b), (b, a)):
        r = class_metrics(x, y, sp, ms)
        assert r["dice"] == 0.0 and r["surf_dice"] == 0.0
        assert r["haus95"] == r["hausdorff"] == r["avg_surf"] == pytest.approx(diag)

def test_case_metrics_groups_labels_and_uses_full_diagonal():
    g = np.zeros((30, 30, 30), np.uint8); g[5:15, 5:15, 5:15] = 2; g[8:12, 8:12, 8:12] = 3
    p = g.copy(); p[p == 3] = 2
    r = case_metrics(g, p, {"WT": [2, 3], "ET": [3]}, (1., 1., 1.), ["dice", "hd95"])
    assert r["WT_dice"] == 1.0 and r["WT_haus95"] == 0.0
    assert r["ET_dice"] == 0.0 and r["ET_haus95"] == pytest.approx(np.sqrt(3 * 30**2))

def _golden_cases():
    if not GOLDEN.exists(): return []
    return sorted(p.name[:-len("_official.csv")] for p in GOLDEN.glob("*_official.csv"))

@pytest.mark.real
@pytest.mark.parametrize("case", _golden_cases() or ["missing"])
def test_brats_lesionwise_matches_official(case):
    if case == "missing":
        pytest.fail(f"golden BraTS cases not found at {GOLDEN} (neither ../shared/data nor tests/data): the official-table comparison did NOT run")
    version = int(case[5:9])
    g, p = read_image(GOLDEN / f"{case}-gt.nii.gz"), read_image(GOLDEN / f"{case}-pred.nii.gz")
    ours = brats_lesionwise(to_xyz(g), to_xyz(p), g.GetSpacing(), version=version, challenge="GLI")
    ref = pd.read_csv(GOLDEN / f"{case}_official.csv")
    assert list(ours.columns) == list(ref.columns)
    assert ours["Labels"].tolist() == ref["Labels"].tolist()
    # Sensitivity/Specificity: the 2024 code computes them on lesion-numbered maps; ours are on binary masks.
    skip = {"Sensitivity", "Specificity"} if version == 2024 else set()
    for col in ref.columns[1:]:
        if col in skip: continue
        np.testing.assert_allclose(ours[col].to_numpy(float), ref[col].to_numpy(float), rtol=1e-9, atol=1e-12, err_msg=f"{case}: {col}")

# The official BraTS 2023 parameters (rachitsaluja/BraTS-2023-Metrics, metrics.py, get_LesionWiseResults):
# challenge -> (dilation iterations, lesions of <= this many mm^3 dropped). Penalty 374 for all.
OFFICIAL_2023 = {"GLI": (3, 50), "SSA": (3, 50), "PED": (3, 50), "MEN": (1, 50), "MET": (1, 2)}

def _et_row(gt, pr, challenge, spacing=(1., 1., 1.)):
    r = brats_lesionwise(gt, pr, spacing, challenge=challenge).set_index("Labels")
    assert (r.loc["WT"] == r.loc["ET"]).all() and (r.loc["TC"] == r.loc["ET"]).all()   # label 3 only: three equal rows
    return r.loc["ET"]

def _lesion(gt, x0, nvox):
    "A lesion of `nvox` voxels starting at x0: full 5x5 slabs along x, the remainder as a partial slab."
    full, rest = divmod(nvox, 25)
    gt[x0:x0 + full, 2:7, 2:7] = 3
    if rest: gt[x0 + full, 2:7, 2:7].flat[:rest] = 3

@pytest.mark.parametrize("challenge", sorted(OFFICIAL_2023))
def test_brats2023_threshold_per_challenge(challenge):
    """Lesions of thr and thr+1 mm^3 with no prediction: the first is dropped (<=), the second is one miss."""
    thr = OFFICIAL_2023[challenge][1]
    gt = np.zeros((80, 9, 9), np.uint8)
    _lesion(gt, 2, thr); _lesion(gt, 40, thr + 1)                      # 30+ voxels apart: never merged
    r = _et_row(gt, np.zeros_like(gt), challenge)
    assert (r.Num_TP, r.Num_FN, r.Num_FP) == (0, 1, 0)
    assert r.LesionWise_Score_Dice == 0.0 and r.LesionWise_Score_HD95 == 374.0
    gt2 = np.zeros_like(gt); _lesion(gt2, 2, thr)                       # only the lesion at the threshold: nothing left to score
    r = _et_row(gt2, np.zeros_like(gt), challenge)
    assert (r.Num_TP, r.Num_FN, r.Num_FP) == (0, 0, 0)
    assert r.LesionWise_Score_Dice == 1.0 and r.LesionWise_Score_HD95 == 0.0

def test_brats2023_threshold_is_in_mm3():
    """25 voxels of 1 x 1 x 2 mm are 50 mm^3: dropped by GLI (<= 50), kept by MET (> 2) as one miss."""
    gt = np.zeros((20, 9, 9), np.uint8); _lesion(gt, 2, 25)
    assert _et_row(gt, np.zeros_like(gt), "GLI", (1., 1., 2.)).Num_FN == 0
    assert _et_row(gt, np.zeros_like(gt), "MET", (1., 1., 2.)).Num_FN == 1
    gt = np.zeros((20, 9, 9), np.uint8); _lesion(gt, 2, 26)              # 52 mm^3: kept by both
    assert _et_row(gt, np.zeros_like(gt), "GLI", (1., 1., 2.)).Num_FN == 1

@pytest.mark.parametrize("challenge", sorted(OFFICIAL_2023))
def test_brats2023_dilation_per_challenge(challenge):
    """Two 4^3 cubes `gap` empty voxels apart along x, the prediction exactly the first cube.
    `dil` iterations of the 18-neighbourhood grow each cube `dil` voxels along x, so the pair is one lesion
    when gap <= 2 * dil: one lesion of 128 voxels, half found (TP 1, Dice 2*64/(128+64)); at gap 2*dil + 1
    two lesions, one found exactly (Dice 1, HD95 0) and one missed (Dice 0, HD95 374): Dice 1/2, HD95 187."""
    dil = OFFICIAL_2023[challenge][0]
    def case(gap):
        gt = np.zeros((40, 12, 12), np.uint8); pr = np.zeros_like(gt)
        gt[2:6, 4:8, 4:8] = 3; gt[6 + gap:10 + gap, 4:8, 4:8] = 3; pr[2:6, 4:8, 4:8] = 3
        return _et_row(gt, pr, challenge)
    r = case(2 * dil)
    assert (r.Num_TP, r.Num_FN, r.Num_FP) == (1, 0, 0)
    assert r.LesionWise_Score_Dice == pytest.approx(2 * 64 / (128 + 64))
    r = case(2 * dil + 1)
    assert (r.Num_TP, r.Num_FN, r.Num_FP) == (1, 1, 0)
    assert r.LesionWise_Score_Dice == pytest.approx(0.5) and r.LesionWise_Score_HD95 == pytest.approx(187.0)

@pytest.mark.parametrize("challenge", sorted(OFFICIAL_2023))
def test_brats2023_match_uses_the_challenge_dilation(challenge):
    """A predicted cube `gap` empty voxels from the lesion. It is matched when it overlaps the lesion dilated
    `dil` times (which reaches `dil` voxels along x): at gap dil - 1 a TP of Dice 0; at gap dil a FP plus a miss."""
    dil = OFFICIAL_2023[challenge][0]
    def case(gap):
        gt = np.zeros((40, 12, 12), np.uint8); pr = np.zeros_like(gt)
        gt[2:6, 4:8, 4:8] = 3; pr[6 + gap:10 + gap, 4:8, 4:8] = 3
        return _et_row(gt, pr, challenge)
    r = case(dil - 1)
    assert (r.Num_TP, r.Num_FN, r.Num_FP) == (1, 0, 0) and r.LesionWise_Score_Dice == 0.0
    r = case(dil)
    assert (r.Num_TP, r.Num_FN, r.Num_FP) == (0, 1, 1)
    assert r.LesionWise_Score_Dice == 0.0 and r.LesionWise_Score_HD95 == 374.0

def test_brats_challenge_names():
    assert brats_config(2023, "BraTS-MEN")["default_dilation"] == 1 and brats_config(2023, "met")["default_threshold"] == 2
    assert brats_config(2024, "GLI")["penalty"] == 337 and brats_config(2023)["penalty"] == 374
    with pytest.raises(SegcookError, match=r"'LUNG' unknown.*2023: GLI, MEN, MET, PED, SSA; 2024: GLI"):
        brats_lesionwise(np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8), challenge="LUNG")
    with pytest.raises(SegcookError, match="2024 challenge 'SSA' unknown or not implemented"):
        brats_config(2024, "SSA")
    with pytest.raises(SegcookError, match="BraTS version 2022 unknown"):
        brats_config(2022)
