"Bad input a user can hit (issue 16, reliability classes): each test builds the bad input for real and asserts the message."
import os, subprocess, sys, gzip
from pathlib import Path
import numpy as np
import pytest
from conftest import segcook_cmd


def _run(*args, cwd=None, env=None):
    return subprocess.run(segcook_cmd(*args), capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "SEGCOOK_QUIET": "1", **(env or {})})


@pytest.fixture
def tiny(tmp_path):
    "A 2-case phantom (16 x 16 x 12) written by the CLI, as a user would."
    r = _run("phantom", "--out", tmp_path/"D", "--cases", 2, "--size", 16, 16, 12)
    assert r.returncode == 0, r.stderr
    return tmp_path/"D"/"dataset.json"


# ---- class 1: corrupt files ------------------------------------------------------------------------------------------

def test_check_names_truncated_and_corrupt_files(tiny):
    d = tiny.parent/"train"
    img, lbl, crc = d/"brats_000/brats_000_t1.nii.gz", d/"brats_000/brats_000_seg.nii.gz", d/"brats_001/brats_001_flair.nii.gz"
    for p in (img, lbl): b = p.read_bytes(); p.write_bytes(b[:len(b) // 2])      # half-length, as an interrupted copy
    b = bytearray(crc.read_bytes()); b[-6] ^= 0xFF; crc.write_bytes(bytes(b))     # one flipped bit of the gzip CRC
    raw = d/"brats_001/brats_001_t2.nii.gz"                                       # gzip intact, NIfTI voxels missing
    data = gzip.decompress(raw.read_bytes()); raw.write_bytes(gzip.compress(data[:len(data) - 100]))
    r = _run("check", "--data", tiny)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    lines = r.stdout.splitlines()
    for p, what in ((img, "truncated"), (lbl, "truncated"), (crc, "corrupt"), (raw, "truncated")):
        assert any(str(p) in l and what in l for l in lines), (p, r.stdout)
    assert "4 problem(s)" in r.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    "(dataset.json, experiment) made with the CLI: 4 training + 1 test phantom case, 2 folds, fold 0 trained 1 step."
    root = tmp_path_factory.mktemp("trained")
    dj, exp = root/"D"/"dataset.json", root/"E"
    for args in (("phantom", "--out", root/"D", "--cases", 4, "--size", 24, 24, 16, "--test-cases", 1),
                 ("analyze", "--data", dj, "--exp", exp, "--nfolds", 2, "--max-patch-size", 16, 16, 16),
                 ("preprocess", "--exp", exp),
                 ("train", "--exp", exp, "--folds", 0, "--epochs", 1, "--steps-per-epoch", 1)):
        r = _run(*args); assert r.returncode == 0, r.stderr
    return dj, exp


# ---- class 2: relative paths -----------------------------------------------------------------------------------------

def test_predict_relative_input_folder_from_another_cwd(trained, tmp_path):
    dj, exp = trained
    cwd = tmp_path/"work"; cwd.mkdir()
    rel = lambda p: os.path.relpath(p, cwd)
    r = _run("predict", "--exp", rel(exp), "--input", rel(dj.parent/"test"), "--out", "pred", "--fast", cwd=cwd)
    assert r.returncode == 0, r.stderr
    assert (cwd/"pred"/"brats_test_000.nii.gz").exists()
    r = _run("predict", "--exp", rel(exp), "--input", rel(dj.parent/"nope"), "--out", "pred2", "--fast", cwd=cwd)
    assert r.returncode == 2 and "input not found" in r.stderr
    assert r.stderr.count("nope") == 1, r.stderr                                   # the path is printed once


# ---- class 3: checkpoints --------------------------------------------------------------------------------------------

@pytest.fixture
def exp_copy(trained, tmp_path):
    import shutil
    dj, exp = trained
    shutil.copytree(exp, tmp_path/"E")
    return dj, tmp_path/"E"


def _predict(dj, exp, out, *extra):
    return _run("predict", "--exp", exp, "--input", dj.parent/"test", "--out", out, "--fast", *extra)


def test_empty_and_truncated_checkpoints_are_named(exp_copy, tmp_path):
    dj, exp = exp_copy
    best = exp/"models"/"fold_0"/"best.pt"
    good = best.read_bytes()
    for content, what in ((b"", "empty checkpoint file (0 bytes"), (good[:len(good) // 2], "truncated or corrupt"),
                          (b"not a checkpoint at all", "truncated or corrupt")):
        best.write_bytes(content)
        r = _predict(dj, exp, tmp_path/"p")
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert f"{best}: " in r.stderr and what in r.stderr, r.stderr
    assert not (tmp_path/"p"/"brats_test_000.nii.gz").exists()


def test_checkpoint_that_does_not_fit_the_experiment_is_refused(exp_copy, tmp_path):
    import json
    dj, exp = exp_copy
    cfg = json.loads((exp/"config.json").read_text())
    trained_ps = cfg["spatial"]["patch_size"]
    cfg["spatial"]["patch_size"] = [8, 8, 8]; cfg["labels"]["regions"] = None
    (exp/"config.json").write_text(json.dumps(cfg))
    r = _predict(dj, exp, tmp_path/"p")
    assert r.returncode == 2 and "does not fit the experiment's plan" in r.stderr, r.stderr
    assert f"spatial.patch_size: [8, 8, 8] in {exp/'config.json'} vs {trained_ps} in {exp/'models/fold_0/best.pt'}" in r.stderr
    assert "labels.regions: None in" in r.stderr
    assert not (tmp_path/"p"/"brats_test_000.nii.gz").exists()


def test_missing_gpu_is_a_device_problem(trained, tmp_path):
    import torch
    if torch.cuda.is_available(): pytest.skip("a GPU is visible: --device cuda works here")
    dj, exp = trained
    r = _predict(dj, exp, tmp_path/"p", "--device", "cuda")
    assert r.returncode == 2 and "device 'cuda': no CUDA GPU is visible on this machine; use --device cpu" in r.stderr, r.stderr
    assert "checkpoint" not in r.stderr
