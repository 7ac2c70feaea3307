"Trainer: learning, exact resume after a kill, flags, overrides, checkpoints, DDP on CPU (gloo), GPU checks."
import json, logging, os, shutil, signal, subprocess, sys, time
from pathlib import Path
import numpy as np
import pytest
import torch
from segcook.core import SegcookError, load_plan
from segcook.train import (train, toy_experiment, load_model, load_checkpoint, cli_train, lr_factor, fold_ids, score_cases,
                           GlobalBatchLoader)
from segcook.core import Train
from segcook.nets import build_net

SMALL = dict(cases=4, size=(24, 24, 16), patch=(16, 16, 16), nfolds=2, val_fraction=0.5)
torch.set_num_threads(1)              # the test machine is shared: threads would spin against each other
os.environ.setdefault("OMP_NUM_THREADS", "1")
TINY_NET = {"arch_kwargs": {"base": 4}}


@pytest.fixture(scope="module")
def base_exp(tmp_path_factory):
    "A tiny phantom experiment (regions), made once; tests copy it."
    return toy_experiment(tmp_path_factory.mktemp("exp")/"exp", **SMALL, epochs=2, steps_per_epoch=2, batch_size=2, **TINY_NET)


@pytest.fixture
def exp(base_exp, tmp_path):
    dst = tmp_path/"exp"
    shutil.copytree(base_exp, dst, ignore=shutil.ignore_patterns("models"))
    return dst


def weights(path): return load_checkpoint(path)["model"]


def log_rows(exp, k=0):
    import csv
    return list(csv.DictReader(open(Path(exp)/"models"/f"fold_{k}"/"log.csv")))


def test_overfits_one_tiny_case(exp):
    "The training loss falls well below its start on a tiny case (the trainer learns)."
    train(exp, folds=[0], epochs=3, steps_per_epoch=10, lr=1e-2, loader="global", oversampling=1.0)
    loss = [float(r["train_loss"]) for r in log_rows(exp)]
    assert len(loss) == 3 and loss[2] < loss[1] < loss[0], loss
    assert loss[-1] < 0.95 * loss[0], loss


def test_resume_after_kill_equals_uninterrupted(exp, tmp_path):
    "A run killed (SIGKILL) mid-training and resumed ends with exactly the weights of an uninterrupted run."
    opts = dict(folds=[0], epochs=4, steps_per_epoch=2, scheduler="cosine", warmup_epochs=1, l2=1e-4, clip_grad=1.0, loader="global")
    ref = tmp_path/"ref"; shutil.copytree(exp, ref)
    train(ref, **opts)
    code = (f"from segcook.train import train; train({str(exp)!r}, folds=[0], epochs=4, steps_per_epoch=2, scheduler='cosine', "
            "warmup_epochs=1, l2=1e-4, clip_grad=1.0, loader='global')")
    p = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "SEGCOOK_QUIET": "1"})
    last, t0 = exp/"models"/"fold_0"/"last.pt", time.time()
    while not last.exists() and p.poll() is None and time.time() - t0 < 120: time.sleep(0.05)
    p.send_signal(signal.SIGKILL); p.wait()
    done = load_checkpoint(last)["epoch"]
    assert 1 <= done < 4, f"the run was not interrupted mid-way (epoch {done})"
    with pytest.raises(SegcookError, match="--resume"): train(exp, **opts)
    train(exp, resume=True, **opts)
    a, b = weights(ref/"models/fold_0/last.pt"), weights(last)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["epoch"] for r in log_rows(exp)] == ["1", "2", "3", "4"]
    assert [r["train_loss"] for r in log_rows(exp)] == [r["train_loss"] for r in log_rows(ref)]


def test_dali_loader_continues_exactly(exp, tmp_path):
    "With the DALI loader (augmentation on), 1 epoch + extend to 2 equals 2 epochs straight (constant schedule)."
    ref = tmp_path/"ref"; shutil.copytree(exp, ref)
    train(ref, folds=[0], epochs=2, steps_per_epoch=2, loader="dali")
    train(exp, folds=[0], epochs=1, steps_per_epoch=2, loader="dali")
    train(exp, folds=[0], epochs=2, steps_per_epoch=2, loader="dali", extend=True)
    a, b = weights(ref/"models/fold_0/last.pt"), weights(exp/"models/fold_0/last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_warmup_longer_than_run_is_clamped(exp, caplog):
    "warmup_epochs >= epochs trains (clamped, with a warning), and the learning rate rises then follows the schedule."
    with caplog.at_level(logging.WARNING, logger="segcook"):
        train(exp, folds=[0], epochs=2, steps_per_epoch=1, warmup_epochs=5, lr=1e-3, loader="global")
    assert "clamping warmup" in caplog.text
    lrs = [float(r["lr"]) for r in log_rows(exp)]
    assert lrs == pytest.approx([1e-3 / 2, 1e-3])
    t = Train(epochs=10, scheduler="poly", warmup_epochs=0)
    assert lr_factor(5, t) == pytest.approx(0.5 ** 0.9)


def test_flags_are_explicit_and_exclusive(exp):
    with pytest.raises(SegcookError, match="exclusive"): train(exp, resume=True, overwrite=True)
    with pytest.raises(SegcookError, match="exclusive"): train(exp, resume=True, extend=True)
    with pytest.raises(SegcookError, match="nothing to extend"): train(exp, folds=[0], extend=True, epochs=3, loader="global")
    train(exp, folds=[0], epochs=1, steps_per_epoch=1, loader="global")
    with pytest.raises(SegcookError, match="--overwrite"): train(exp, folds=[0], epochs=1, loader="global")
    with pytest.raises(SegcookError, match="other settings"): train(exp, folds=[0], resume=True, epochs=1, lr=0.1, loader="global")
    with pytest.raises(SegcookError, match="larger"): train(exp, folds=[0], extend=True, epochs=1, loader="global")
    res = train(exp, folds=[0], resume=True, loader="global")          # finished: nothing to do
    assert set(res) == {0}
    train(exp, folds=[0], extend=True, epochs=2, loader="global")
    assert load_checkpoint(exp/"models/fold_0/last.pt")["epoch"] == 2
    train(exp, folds=[0], overwrite=True, epochs=1, steps_per_epoch=1, loader="global")
    assert [r["epoch"] for r in log_rows(exp)] == ["1"]
    with pytest.raises(SystemExit): cli_train(["--exp", str(exp), "--resume", "--overwrite"])
    assert cli_train(["--exp", str(exp), "--folds", "0", "--loader", "global"]) == 2


def test_overrides_stay_out_of_config(exp):
    before = (exp/"config.json").read_bytes()
    train(exp, folds=[1], epochs=1, steps_per_epoch=1, lr=5e-4, arch="unet", loss="dice", loader="global")
    assert (exp/"config.json").read_bytes() == before
    ck = load_checkpoint(exp/"models/fold_1/last.pt")
    assert (ck["plan"]["train"]["arch"], ck["plan"]["train"]["loss"], ck["plan"]["train"]["lr"]) == ("unet", "dice", 5e-4)
    assert ck["run"]["overrides"]["train.arch"] == "unet"
    run = json.loads((exp/"models/fold_1/run.json").read_text())
    assert run["overrides"]["train.lr"] == 5e-4 and run["plan"]["train"]["loss"] == "dice"
    assert load_plan(exp).train.arch == "nnunet"


def test_checkpoint_weights_only_and_load_model(exp):
    train(exp, folds=[0], epochs=1, steps_per_epoch=1, deep_supervision=1, loader="global")
    ck = torch.load(exp/"models/fold_0/best.pt", map_location="cpu", weights_only=True)
    assert ck["format"] == "segcook-ckpt-1" and {"plan", "model", "epoch", "best_score", "fold", "optimizer", "scheduler", "scaler", "rng"} <= set(ck)
    net, plan = load_model(exp/"models/fold_0/best.pt")
    assert not net.training and plan.train.deep_supervision == 1
    assert all(torch.equal(v, ck["model"][k]) for k, v in net.state_dict().items())
    x = torch.from_numpy(np.load(exp/"preprocessed"/fold_ids(exp, 0)["val"][0]/"image.npy"))[None, :, :16, :16, :16]
    assert net(x).shape == (1, 3, 16, 16, 16)                        # eval mode: one tensor, 3 regions
    bad = exp/"bad.pt"; torch.save({"x": 1}, bad)
    with pytest.raises(SegcookError, match="not a segcook checkpoint"): load_model(bad)


def test_ddp_two_gloo_processes_equal_one(exp, tmp_path):
    "Two gloo processes with batch 2 each train to the weights of one process with batch 4 (same global batch)."
    one = tmp_path/"one"; shutil.copytree(exp, one)
    # SGD: Adam divides by sqrt(v), turning float noise on zero-gradient parameters (conv biases before
    # instance norm) into full-size steps, so no two summation orders agree under it.
    opts = dict(folds=[0], epochs=2, steps_per_epoch=2, loader="global", optimizer="sgd", lr=1e-2)
    train(one, batch_size=4, **opts)
    train(exp, procs=2, batch_size=2, **opts)
    a, b = weights(one/"models/fold_0/last.pt"), weights(exp/"models/fold_0/last.pt")
    diff = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    torch.manual_seed(load_plan(one).train.seed); init = build_net(load_plan(one)).state_dict()
    moved = max((a[k].float() - init[k].float()).abs().max().item() for k in a)
    assert moved > 100 * diff, (moved, diff)                          # the weights did move, identically
    assert diff < 1e-5, diff
    assert load_checkpoint(exp/"models/fold_0/last.pt")["run"]["world_size"] == 2
    ra, rb = log_rows(one), log_rows(exp)
    assert [float(r["train_loss"]) for r in ra] == pytest.approx([float(r["train_loss"]) for r in rb], rel=1e-4)
    assert [float(r["val_dice"]) for r in ra] == pytest.approx([float(r["val_dice"]) for r in rb], abs=1e-3)


def test_global_batch_loader_slices(exp):
    "Each rank's batch is its slice of the single-process batch; an epoch's patches depend only on (seed, epoch)."
    plan, dirs = load_plan(exp), [exp/"preprocessed"/i for i in fold_ids(exp, 0)["train"]]
    full = list(GlobalBatchLoader(dirs, plan, 4, seed=3, steps=2))
    parts = [list(GlobalBatchLoader(dirs, plan, 2, seed=3, shard_id=r, num_shards=2, steps=2)) for r in (0, 1)]
    for s in range(2):
        assert torch.equal(torch.cat([parts[0][s]["image"], parts[1][s]["image"]]), full[s]["image"])
    dl = GlobalBatchLoader(dirs, plan, 4, seed=3, steps=1); dl.set_epoch(1)
    assert not torch.equal(next(iter(dl))["image"], full[0]["image"])
    assert full[0]["image"].shape == (4, 4, 16, 16, 16) and full[0]["label"].shape == (4, 1, 16, 16, 16)


def test_more_gpus_than_exist(exp):
    n = torch.cuda.device_count()
    with pytest.raises(SegcookError, match=f"asked for {n + 1} GPU"): train(exp, gpus=n + 1)
    with pytest.raises(SegcookError, match="procs"): train(exp, gpus=1, procs=2)


def test_unpreprocessed_case_is_named(exp):
    cid = fold_ids(exp, 0)["train"][0]
    (exp/"preprocessed"/cid/"meta.json").unlink()
    with pytest.raises(SegcookError, match=cid): train(exp, folds=[0], loader="global")


@pytest.mark.slow
def test_quality_whole_tumour(tmp_path):
    "A short CPU run (benchmarks/train_quality.py settings) reaches whole-tumour Dice >= 0.85 on held-out phantom cases."
    exp = toy_experiment(tmp_path/"q", cases=12, size=(64, 64, 48), patch=(32, 32, 32), nfolds=4, val_fraction=0.15, seed=0,
                         epochs=40, steps_per_epoch=25, lr=3e-3, scheduler="cosine", batch_size=2, arch_kwargs={"base": 8})
    train(exp, folds=[0], loader="global")
    net, plan = load_model(exp/"models/fold_0/best.pt")
    sc = score_cases(net, exp, fold_ids(exp, 0)["test"], plan)
    assert len(sc) == 3 and np.mean([v["WT"] for v in sc.values()]) >= 0.85, sc


def test_dice_scores_softmax_with_ignore_label():
    "Softmax plans score final classes on the argmax label map; ignore-label voxels do not count (hand-computed)."
    from segcook.core import Plan
    from segcook.train import dice_scores
    p = Plan(); p.labels.labels, p.labels.ignore_label = [0, 1, 2], 9
    p.labels.final_classes = {"fg": [1, 2], "two": [2]}
    lab = torch.tensor([0, 1, 2, 2, 1, 0])                                  # predicted labels
    logits = torch.nn.functional.one_hot(lab, 3).T.float().reshape(1, 3, 6, 1, 1) * 5
    y = torch.tensor([0, 1, 1, 2, 9, 9]).reshape(1, 1, 6, 1, 1)             # last two voxels ignored
    s = dice_scores(logits, y, p)
    assert s["fg"] == pytest.approx(2 * 3 / (3 + 3))                         # pred fg {1,2,3}, true fg {1,2,3}
    assert s["two"] == pytest.approx(2 * 1 / (2 + 1))                        # pred {2,3}, true {3}


@pytest.mark.slow
def test_torchrun_entry_point(exp):
    "`torchrun --nproc_per_node 2 segcook train ...` runs the same entry point as 2 gloo ranks."
    bin_ = Path(sys.executable).parent
    r = subprocess.run([str(bin_/"torchrun"), "--nproc_per_node", "2", str(bin_/"segcook"), "train", "--exp", str(exp), "--folds", "0",
                        "--epochs", "1", "--steps-per-epoch", "1", "--loader", "global"],
                       capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "fold 0: best validation Dice" in r.stdout
    assert load_checkpoint(exp/"models/fold_0/last.pt")["run"]["world_size"] == 2


def test_auto_loader_falls_back_when_dali_does_not_import(exp, monkeypatch):
    "loader='auto' is DALI where it imports, and the exact-DDP reference loader where it does not (None in sys.modules blocks the import)."
    from segcook.train import make_loader, _dali_available
    from segcook.loader import TrainLoader
    plan, dirs = load_plan(exp), [exp/"preprocessed"/i for i in fold_ids(exp, 0)["train"]]
    assert _dali_available()
    assert isinstance(make_loader("auto", dirs, plan, 2, 0, 0, 1, None, 1), TrainLoader)
    monkeypatch.setitem(sys.modules, "nvidia.dali", None)
    assert not _dali_available()
    assert isinstance(make_loader("auto", dirs, plan, 2, 0, 0, 1, None, 1), GlobalBatchLoader)


@pytest.mark.slow
def test_two_nodes_on_one_filesystem_lock_once(exp):
    "Two 'nodes' (each its own LOCAL_RANK 0, global ranks 0 and 1) train one fold on a shared folder: only global rank 0 takes the fold lock, so neither refuses the other (issue 16)."
    from segcook.train import _free_port
    port, bin_ = _free_port(), Path(sys.executable).parent
    cmd = [str(bin_/"segcook"), "train", "--exp", str(exp), "--folds", "0", "--epochs", "1", "--steps-per-epoch", "1", "--loader", "global"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    ps = [subprocess.Popen(cmd, env={**env, "RANK": str(r), "GROUP_RANK": str(r)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
          for r in (0, 1)]
    outs = [p.communicate(timeout=300) for p in ps]
    assert [p.returncode for p in ps] == [0, 0], [o[1][-1500:] for o in outs]
    assert "being trained by another process" not in outs[1][1]
    assert load_checkpoint(exp/"models/fold_0/last.pt")["run"]["world_size"] == 2
    assert not (exp/"models/fold_0/train.lock").exists()                  # released by the rank that took it


@pytest.mark.slow
def test_maps_are_read_only_when_the_loss_needs_them(exp):
    "With preprocess.distance_maps on, a Dice loss never opens dtm.npy; the boundary loss reads it (here: missing, so named; issue 16)."
    opts = dict(folds=[0], epochs=1, steps_per_epoch=1, loader="global", overwrite=True, **{"preprocess.distance_maps": True})
    assert not list(exp.glob("preprocessed/*/dtm.npy"))
    train(exp, loss="dice_ce", **opts)
    with pytest.raises(SegcookError, match=r"dtm.npy is missing.*preprocess.distance_maps"): train(exp, loss="boundary", **opts)


@pytest.mark.slow
def test_boundary_loss_trains_on_loaded_maps(exp):
    "The boundary loss trains from the maps preprocessing wrote, through the DALI loader (issue 16)."
    from segcook.preprocess import distance_maps
    plan = load_plan(exp)
    for d in exp.glob("preprocessed/*"):
        np.save(d/"dtm.npy", distance_maps(np.load(d/"label.npy")[0], plan, plan.spatial.target_spacing))
    train(exp, folds=[0], epochs=1, steps_per_epoch=2, loader="dali", loss="boundary", **{"preprocess.distance_maps": True})
    assert np.isfinite(float(log_rows(exp)[0]["train_loss"]))
