"""Regenerate tests/data/pyradiomics/ from the full pyradiomics scans (../shared/data/pyradiomics or $SEGCOOK_SHARED_DATA).

    .venv/bin/python tests/data/make_crops.py [SRC_FOLDER]

The big scans are cropped with `sitk.RegionOfInterest` (spacing, direction and pixel type kept; the origin moves to the
first kept voxel), so a crop is the same real scan, smaller: the tests keep their meaning (anisotropic CT at 5 mm,
MR with a flipped y axis, the whole lesion with surroundings). Boxes are voxel indices [start, stop) in (x, y, z).
Files are written as gzip-compressed NRRD; breast1 (79 kB) is copied whole. The README lists the same boxes.
The golden BraTS metric cases (../shared/data/brats_metrics) are copied to tests/data/brats_metrics with their label
maps stored as uint8 instead of float32: the same voxels (checked here), 190 kB instead of 2.5 MB.
"""
import os, shutil, sys
from pathlib import Path
import SimpleITK as sitk

HERE = Path(__file__).resolve().parent
OUT = HERE/"pyradiomics"
# name: ((x0, y0, z0), (x1, y1, z1)) in the original scan's voxel indices; None: copied whole
# The brain boxes are placed on the grid of preprocessing: a 0.7 mm grid centred on the crop's foreground box falls on
# the same world points as the one centred on the whole scan's (checked in tests/test_testdata.py), so the small
# lesions are resampled exactly as in the whole scan (brain2's 453 voxels change volume by a few % with the grid phase).
BOXES = {
    "lung1": ((170, 312, 0), (266, 408, 48)),     # 512x512x48 -> 96x96x48: the 837-voxel tumour (x 206-229, y 347-372, z 32-34) + 36 voxels, every slice
    "lung2": ((278, 293, 9), (438, 439, 32)),     # 512x512x61 -> 160x146x23: the 24,644-voxel tumour (x 318-404, y 333-398, z 15-25) + 40 / 40 / 6 voxels
    "brain1": ((131, 52, 0), (239, 204, 25)),     # 256x256x25 -> 108x152x25: the 4,137-voxel lesion (x 162-208, y 84-153) + 31..50 voxels, every slice
    "brain2": ((134, 119, 0), (256, 256, 23)),    # 256x256x23 -> 122x137x23: the 453-voxel lesion (x 205-224, y 155-169) + 31..86 voxels, every slice
    "breast1": None,                              # 45x120x21, 79 kB: whole
}


def crop(src:Path, dst:Path, box):
    "Write the voxels `box` of `src` to `dst` (compressed), geometry and pixel type kept."
    img = sitk.ReadImage(str(src))
    if box is not None:
        (x0, y0, z0), (x1, y1, z1) = box
        img = sitk.RegionOfInterest(img, [x1 - x0, y1 - y0, z1 - z0], [x0, y0, z0])
    w = sitk.ImageFileWriter(); w.SetFileName(str(dst)); w.SetUseCompression(True); w.SetCompressionLevel(9)
    w.Execute(img)


def main(src=None):
    src = Path(src or Path(os.environ.get("SEGCOOK_SHARED_DATA", HERE.parents[2]/"shared"/"data"))/"pyradiomics")
    OUT.mkdir(exist_ok=True)
    for name, box in BOXES.items():
        for part in ("image", "label"):
            crop(src/f"{name}_{part}.nrrd", OUT/f"{name}_{part}.nrrd", box)
    shutil.copyfile(src/"LICENSE.txt", OUT/"LICENSE.txt")
    print(f"wrote {OUT}: " + ", ".join(f"{p.name} {p.stat().st_size // 1024} kB" for p in sorted(OUT.glob('*.nrrd'))))
    brats(src.parent/"brats_metrics", HERE/"brats_metrics")


def brats(src:Path, out:Path):
    "The golden BraTS cases, label maps stored as uint8 instead of float32 (same voxels and header: 12 kB, not 160 kB, each)."
    import numpy as np
    out.mkdir(exist_ok=True)
    for f in sorted(src.glob("*.nii.gz")):
        img = sitk.ReadImage(str(f)); a = sitk.GetArrayViewFromImage(img)
        assert a.min() >= 0 and a.max() <= 255 and np.array_equal(a, np.round(a)), f"{f.name}: not a label map"
        u = sitk.Cast(img, sitk.sitkUInt8)
        assert np.array_equal(sitk.GetArrayViewFromImage(u), a)
        sitk.WriteImage(u, str(out/f.name), True, 9)
    for f in sorted(src.glob("*.csv")) + [src/"README.md"]: shutil.copyfile(f, out/f.name)
    print(f"wrote {out}: {len(list(out.glob('*.nii.gz')))} label maps, {sum(p.stat().st_size for p in out.iterdir()) // 1024} kB")


if __name__ == "__main__":
    main(*sys.argv[1:2])
