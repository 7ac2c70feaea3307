"Bad input a user can hit (issue 16, reliability classes): each test builds the bad input for real and asserts the message."
import os, subprocess, sys, gzip, json
from pathlib import Path
import numpy as np
import pytest
from conftest import segcook_cmd


def _fsize_limit(n):
    "A preexec function: files of this process may not grow past `n` bytes (RLIMIT_FSIZE): a disk that is full for it."
    import resource
    return None if n is None else (lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (n, n)))


def _run(*args, cwd=None, env=None, timeout=300, fsize=None):
    "Run the segcook CLI (a hang, as an absurd batch size once caused, fails the test instead of stalling it)."
    return subprocess.run(segcook_cmd(*args), capture_output=True, text=True, cwd=cwd, timeout=timeout, preexec_fn=_fsize_limit(fsize),
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


def test_unreadable_image_messages_print_the_path_once(tiny, tmp_path):
    bad = tiny.parent/"train"/"brats_000"/"brats_000_t1.nii.gz"
    bad.write_bytes(b"not an image at all")
    r = _run("analyze", "--data", tiny, "--exp", tmp_path/"E", "--nfolds", 2, "--max-patch-size", 16, 16, 16)
    line = next(l for l in r.stderr.splitlines() if "brats_000:" in l)               # the exclusion of the case
    assert line.count(bad.name) == 1 and "unreadable image header" in line, r.stderr
    from segcook.core import read_image, SegcookError
    with pytest.raises(SegcookError) as e: read_image(bad)
    assert str(e.value).count(str(bad)) == 1 and str(e.value).startswith(f"{bad}: unreadable image ("), str(e.value)


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


# ---- class 4: the plan and the flags are validated up front -----------------------------------------------------------

def _edit(exp, **changes):
    "Set dotted fields of `<exp>/config.json` by hand, as a user editing the plan would."
    import json
    cfg = json.loads((exp/"config.json").read_text())
    for k, v in changes.items():
        *ps, last = k.split("__"); node = cfg
        for q in ps: node = node[int(q)] if isinstance(node, list) else node[q]
        node[last] = v
    (exp/"config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("flags,msg", [(("--epochs", 0), "options train.epochs=0: train.epochs should be >= 1, got 0"),
                                       (("--epochs", 1, "--steps-per-epoch", 0), "train.steps_per_epoch should be >= 1, got 0")])
def test_train_flags_out_of_range(exp_copy, flags, msg):
    dj, exp = exp_copy
    r = _run("train", "--exp", exp, "--folds", 1, *flags)
    assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (exp/"models"/"fold_1").exists()


def test_edited_plan_fields_out_of_range_all_named(exp_copy):
    dj, exp = exp_copy
    _edit(exp, train__lr=0, train__batch_size=0, channels__0__norm="minmax", infer__tta_axes=[0, 3], infer__sw_batch_size=0,
          train__folds=[5])
    r = _run("train", "--exp", exp, "--epochs", 1)
    assert r.returncode == 2, r.stderr
    for m in ("train.lr should be a finite number > 0, got 0", "train.batch_size should be >= 1, got 0",
              "channel 't1': norm should be one of ['zscore', 'ct'] ('by_modality' with by_modality for a mixed channel), got 'minmax'",
              "infer.tta_axes should be distinct axes among 0, 1, 2 (x, y, z), got [0, 3]",
              "infer.sw_batch_size should be >= 1, got 0", "train.folds [5] should be in 0 to 1"):
        assert m in r.stderr, (m, r.stderr)
    assert f"{exp/'config.json'}: " in r.stderr
    _edit(exp, train__lr=1e-3, train__batch_size=2, channels=[], infer__tta_axes=[0], infer__sw_batch_size=1, train__folds=None)
    r = _run("predict", "--exp", exp, "--input", dj.parent/"test", "--out", exp/"p")
    assert r.returncode == 2 and "channels: a plan needs at least one channel, got none" in r.stderr, r.stderr


def test_absurd_batch_size_is_refused_before_training(exp_copy):
    dj, exp = exp_copy
    _edit(exp, train__batch_size=10**7)                          # no machine has that much memory: refused on load
    r = _run("train", "--exp", exp, "--folds", 1, "--epochs", 1)
    assert r.returncode == 2 and "train.batch_size 10000000 with spatial.patch_size" in r.stderr, r.stderr
    assert "(the most any machine has: 1,024 GiB); allowed: 1 to " in r.stderr
    ram_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    if ram_gib > 500: pytest.skip("this machine has more memory than the batch below needs")
    _edit(exp, train__batch_size=200_000)                        # fits the cap, not this machine: refused by train, at once
    r = _run("train", "--exp", exp, "--folds", 1, "--epochs", 1)
    assert r.returncode == 2 and "GiB per training step (this machine's memory: " in r.stderr, r.stderr
    assert not (exp/"models"/"fold_1").exists()


def test_postprocessing_steps_out_of_range(tmp_path, trained):
    import json
    dj, exp = trained
    for step, msg in (({"op": "opening", "labels": [1], "radius": 0}, "radius should be an integer from 1 to 32 voxels, got 0"),
                      ({"op": "remove_small", "labels": [0, 1], "min_size": -5}, "labels should be a non-empty list of foreground labels (integers >= 1), got [0, 1]; min_size should be >= 0, got -5")):
        (tmp_path/"s.json").write_text(json.dumps({"steps": [step]}))
        r = _run("postprocess", "--input", dj.parent/"train"/"brats_000", "--out", tmp_path/"o", "--strategy", tmp_path/"s.json")
        assert r.returncode == 2 and f"{tmp_path/'s.json'}: step 0 ({step['op']}): {msg}" in r.stderr, r.stderr
        assert not (tmp_path/"o").exists()


# ---- class 5: exit codes tell the truth -------------------------------------------------------------------------------

def test_preprocess_where_every_case_fails_exits_nonzero(tiny, tmp_path):
    r = _run("analyze", "--data", tiny, "--exp", tmp_path/"E", "--nfolds", 2, "--max-patch-size", 16, 16, 16)
    assert r.returncode == 0, r.stderr
    t1s = sorted((tiny.parent/"train").glob("*/*_t1.nii.gz"))
    t1s[0].write_bytes(b"not an image")                                  # one case fails: counted, exit 0
    r = _run("preprocess", "--exp", tmp_path/"E", "--workers", 1)
    assert r.returncode == 0 and r.stdout.strip().splitlines()[-1].endswith("1 case(s) preprocessed in " + str(tmp_path/"E"/"preprocessed") + "; 1 failed (see failed.json)"), r.stdout
    for p in t1s: p.write_bytes(b"not an image")                         # every case fails: exit 1
    r = _run("preprocess", "--exp", tmp_path/"E", "--workers", 1, "--overwrite")
    assert r.returncode == 1 and "0 case(s) preprocessed" in r.stdout and "2 failed" in r.stdout, (r.returncode, r.stdout, r.stderr)


def test_evaluate_says_how_many_predictions_are_missing(exp_copy):
    dj, exp = exp_copy
    r = _run("predict", "--exp", exp, "--oof", "--fast")                 # fold 0 only: 2 of the 5 labelled cases
    assert r.returncode == 0, r.stderr
    r = _run("evaluate", "--exp", exp, "--workers", 1)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1].endswith(
        f"2 case(s) evaluated; 3 labelled case(s) of {exp/'cases.csv'} have no prediction and were not evaluated"), r.stdout
    import csv
    rows = [(i, m, exp/"predictions"/"oof"/f"{i}.nii.gz") for i, m in
            ((r["id"], r["label"]) for r in csv.DictReader(open(exp/"cases.csv")) if r["label"])]
    with open(exp/"paths.csv", "w") as f: f.write("id,mask,prediction\n" + "".join(f"{i},{m},{p}\n" for i, m, p in rows))
    (exp/"classes.json").write_text('{"WT": [1, 2, 3]}')
    r = _run("evaluate", "--paths", exp/"paths.csv", "--classes", exp/"classes.json", "--out", exp/"r.csv", "--workers", 1)
    assert r.returncode == 2 and "3 of 5 prediction(s): file not found: " in r.stderr and "Traceback" not in r.stderr, r.stderr
    for flags, msg in ((("--nsd-tol", -1), "the NSD tolerance (--nsd-tol, evaluate.nsd_tolerance_mm) should be > 0 mm, got -1.0"),
                       (("--workers", -2), "--workers should be >= 1 (or unset: all cores), got -2")):      # class 4: flags
        r = _run("evaluate", "--exp", exp, "--classes", exp/"classes.json", *flags)
        assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr, r.stderr


# ---- class 10: determinism ------------------------------------------------------------------------------------------

def test_n4_preprocessing_does_not_depend_on_workers(tmp_path):
    import shutil
    r = _run("phantom", "--out", tmp_path/"D", "--cases", 2, "--size", 48, 48, 32)
    assert r.returncode == 0, r.stderr
    r = _run("analyze", "--data", tmp_path/"D"/"dataset.json", "--exp", tmp_path/"E1", "--nfolds", 2)
    assert r.returncode == 0, r.stderr
    shutil.copytree(tmp_path/"E1", tmp_path/"E2")
    for exp, w in (("E1", 1), ("E2", 2)):
        r = _run("preprocess", "--exp", tmp_path/exp, "--n4", "--workers", w, env={"OMP_NUM_THREADS": "2"})
        assert r.returncode == 0, r.stderr
    for cid in ("brats_000", "brats_001"):
        a, b = (np.load(tmp_path/e/"preprocessed"/cid/"image.npy") for e in ("E1", "E2"))
        assert a.shape == b.shape and np.array_equal(a, b), (cid, float(np.abs(a - b).max()))


# ---- class 9: concurrency --------------------------------------------------------------------------------------------

def test_second_train_on_the_same_fold_refuses_and_a_stale_lock_is_taken_over(exp_copy):
    import signal, time, json, socket
    dj, exp = exp_copy
    lock = exp/"models"/"fold_1"/"train.lock"
    first = subprocess.Popen(segcook_cmd("train", "--exp", exp, "--folds", 1, "--epochs", 1000, "--steps-per-epoch", 2),
                             env={**os.environ, "OMP_NUM_THREADS": "1", "SEGCOOK_QUIET": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        t0 = time.time()
        while not lock.exists() and first.poll() is None and time.time() - t0 < 120: time.sleep(0.1)
        assert lock.exists(), first.stderr.read().decode() if first.poll() is not None else "no lock after 120 s"
        assert json.loads(lock.read_text())["pid"] == first.pid and json.loads(lock.read_text())["host"] == socket.gethostname()
        for flags in ((), ("--resume",), ("--overwrite",)):                       # whatever the flags: refused
            r = _run("train", "--exp", exp, "--folds", 1, "--epochs", 1, "--steps-per-epoch", 1, *flags)
            assert r.returncode == 2, r.stderr
            assert f"{lock}: fold 1 is being trained by another process (pid {first.pid} on host {socket.gethostname()}" in r.stderr, r.stderr
        assert first.poll() is None                                                # the first run was not disturbed
    finally:
        first.send_signal(signal.SIGKILL); first.wait()
    assert lock.exists()                                                           # a killed run leaves its lock: stale
    r = _run("train", "--exp", exp, "--folds", 1, "--epochs", 1, "--steps-per-epoch", 1, "--overwrite")
    assert r.returncode == 0 and "taking over a stale lock" in r.stderr, r.stderr
    assert not lock.exists()                                                       # released on exit
    lock.write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": "2026-01-01 00:00:00"}))
    r = _run("train", "--exp", exp, "--folds", 1, "--epochs", 2, "--steps-per-epoch", 1, "--extend")
    assert r.returncode == 2 and "pid 1 on host elsewhere" in r.stderr and "delete the lock" in r.stderr, r.stderr


# ---- class 6: full disk -----------------------------------------------------------------------------------------------

def _leftovers(folder):
    "Files under `folder` other than the ones a failed stage may leave (its failure report)."
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*") if p.is_file() and p.name != "failed.json")


def test_full_disk_in_preprocess_and_train_names_the_file_and_leaves_nothing_half_written(trained, tmp_path):
    import shutil
    dj, exp0 = trained
    exp = tmp_path/"E"
    shutil.copytree(exp0, exp, ignore=shutil.ignore_patterns("preprocessed", "models"))
    r = _run("preprocess", "--exp", exp, "--workers", 1, fsize=20_000)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert f"{exp/'preprocessed'/'brats_000'/'image.npy'}: no space left on device" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and _leftovers(exp/"preprocessed") == [], _leftovers(exp/"preprocessed")
    r = _run("preprocess", "--exp", exp, "--workers", 1)                   # space again: every case is redone
    assert r.returncode == 0 and "5 case(s) preprocessed" in r.stdout, r.stdout + r.stderr
    r = _run("train", "--exp", exp, "--folds", 0, "--epochs", 1, "--steps-per-epoch", 1, fsize=100_000)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"{exp/'models'/'fold_0'}/" in r.stderr and ".pt: no space left on device" in r.stderr, r.stderr
    assert not list((exp/"models"/"fold_0").glob("*.pt")) and not list((exp/"models"/"fold_0").glob(".*tmp*"))


def test_short_image_write_is_an_error_not_a_file(tmp_path):
    code = ("import numpy as np; from segcook.core import write_image, from_xyz, SegcookError\n"
            "try: write_image(from_xyz(np.random.rand(32, 32, 32).astype(np.float32)), 'out/img.nii.gz')\n"
            "except SegcookError as e: print(e)")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, preexec_fn=_fsize_limit(20_000))
    assert "out/img.nii.gz: no space left on device" in r.stdout, (r.stdout, r.stderr)
    assert not (tmp_path/"out"/"img.nii.gz").exists() and list((tmp_path/"out").iterdir()) == []


# ---- class 11: degenerate data ---------------------------------------------------------------------------------------

def test_degenerate_cases_are_named_by_check_and_excluded_by_analyze(tmp_path):
    import SimpleITK as sitk, shutil
    r = _run("phantom", "--out", tmp_path/"D", "--cases", 4, "--size", 16, 16, 12)
    assert r.returncode == 0, r.stderr
    dj, tr = tmp_path/"D"/"dataset.json", tmp_path/"D"/"train"
    blank, huge = tr/"brats_000"/"brats_000_flair.nii.gz", tr/"brats_001"
    img = sitk.ReadImage(str(blank)); sitk.WriteImage(sitk.Multiply(img, 0), str(blank))         # an all-zero scan
    for p in huge.glob("*.nii.gz"):                                                              # spacing in the wrong unit
        img = sitk.ReadImage(str(p)); img.SetSpacing((1000.0, 1000.0, 1000.0)); sitk.WriteImage(img, str(p))
    r = _run("check", "--data", dj)
    assert r.returncode == 1, r.stderr
    assert f"brats_000: {blank}: flair is constant (0 in every voxel): a blank scan" in r.stdout, r.stdout
    assert "spacing (1000, 1000, 1000) mm is outside 0.01 to 100 mm on some axis" in r.stdout
    r = _run("analyze", "--data", dj, "--exp", tmp_path/"E", "--nfolds", 2)
    assert r.returncode == 0, r.stderr
    assert "2 case(s), 2 excluded" in r.stdout, r.stdout
    import json
    excl = {e["id"]: e["reason"] for e in json.loads((tmp_path/"E"/"config.json").read_text())["excluded"]}
    assert "flair is constant" in excl["brats_000"] and "outside 0.01 to 100 mm" in excl["brats_001"], excl
    for p in tr.glob("*/*_seg.nii.gz"):                                                          # every label empty
        img = sitk.ReadImage(str(p)); sitk.WriteImage(sitk.Multiply(img, 0), str(p))
    r = _run("analyze", "--data", dj, "--exp", tmp_path/"E2", "--nfolds", 2)
    assert r.returncode == 2 and "every training label is empty (only 0) in the 2 usable case(s): there is nothing to learn" in r.stderr, r.stderr
    assert not (tmp_path/"E2"/"config.json").exists()


def test_predict_goes_on_past_a_failing_case(trained, tmp_path):
    "One corrupt input: the other cases are predicted, failed.json names it, the last line counts it; all failing exits 1."
    import shutil
    dj, exp = trained
    src = next(p for p in (dj.parent/"test").iterdir() if p.is_dir())
    inp = tmp_path/"inp"
    for k in range(3): shutil.copytree(src, inp/f"c{k}")
    for k in range(3):                                             # rename the files to each case's id
        for f in (inp/f"c{k}").iterdir(): f.rename(f.with_name(f.name.replace(src.name, f"c{k}")))
    bad = next(f for f in (inp/"c1").iterdir() if "_t1." in f.name)
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])   # truncated gzip
    r = _run("predict", "--exp", exp, "--input", inp, "--out", tmp_path/"p", "--fast")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path/"p").glob("*.nii.gz")) == ["c0.nii.gz", "c2.nii.gz"]
    failed = json.loads((tmp_path/"p"/"failed.json").read_text())
    assert list(failed) == ["c1"] and bad.name in failed["c1"], failed
    assert "2 prediction(s) in" in r.stdout and "1 case(s) failed" in r.stdout, r.stdout
    for k in (0, 2): shutil.rmtree(inp/f"c{k}")
    r = _run("predict", "--exp", exp, "--input", inp, "--out", tmp_path/"q", "--fast")
    assert r.returncode == 1 and "0 prediction(s) in" in r.stdout and "Traceback" not in r.stderr, (r.stdout, r.stderr)
