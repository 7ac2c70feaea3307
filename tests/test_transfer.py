"segcook.transfer: the official STU-Net checkpoints and nnU-Net's reference networks load into ours with equal outputs; bad input; parts, freezing, head LR."
import sys, warnings
import pytest, torch
from torch import nn
from segcook.core import SegcookError, ARCHS
from segcook.nets import STUNet, DynamicUNet, ResEncUNet
from segcook.transfer import load_pretrained, read_checkpoint, parts, freeze, param_groups, PARTS

warnings.filterwarnings("ignore")
torch.set_num_threads(1)
sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from test_nets import CASES
from conftest import shared_part

TINY = dict(kernels=[[3, 3, 3]] * 6, strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 1], [1, 1, 1]],
            widths=[2, 4, 8, 16, 32, 32])


@pytest.fixture(scope="module")
def stunet_dir(shared):
    return shared_part(shared, "stunet")


@pytest.mark.parametrize("depth", [1, 2])
@pytest.mark.parametrize("fname", ["tiny_depth{}_v1.model", "tiny_depth{}_v2.pth"])
def test_official_stunet_output(stunet_dir, depth, fname):
    io = torch.load(stunet_dir/f"tiny_depth{depth}_io.pt", weights_only=True)
    net = STUNet(2, 3, TINY["kernels"], TINY["strides"], TINY["widths"], depth, deep_supervision=4)
    rep = load_pretrained(net, stunet_dir/fname.format(depth), reinit_head=False)
    assert len(rep.loaded) == {1: 130, 2: 218}[depth] and not (rep.unmatched or rep.mismatched or rep.missing or rep.adapted)
    assert rep.container == ("nnU-Net v1 (*.model)" if fname.endswith(".model") else "nnU-Net v2 (*.pth)") and rep.layout == "stunet"
    with torch.no_grad():
        y = net.eval()(io["input"])
        ds = net.train()(io["input"])   # instance norm: the same in train mode; here the 5 deep-supervision outputs
    scale = io["output"].abs().max().item()
    diff = (y - io["output"]).abs().max().item()
    print(f"STU-Net depth {depth} {fname.split('_')[-1]}: max |ours - official| = {diff:.2e} (outputs up to {scale:.1f})")
    assert diff < 1e-5 * max(1.0, scale)
    assert len(ds) == len(io["deep_supervision_outputs"]) == 5
    for a, b in zip(ds, io["deep_supervision_outputs"]):
        assert a.shape == b.shape and (a - b).abs().max().item() < 1e-5 * max(1.0, b.abs().max().item())


def test_official_stunet_finetune_protocol(stunet_dir, tmp_path):
    "SegBook: heads re-initialised (every seg_outputs key skipped), stem repeated for more input channels."
    net = STUNet(4, 7, TINY["kernels"], TINY["strides"], TINY["widths"], 2)
    rep = load_pretrained(net, stunet_dir/"tiny_depth2_v1.model")
    skipped = {k for k, _, r in rep.skipped if r.startswith("head")}
    assert skipped == {k for k in torch.load(stunet_dir/"tiny_depth2_v1.model", weights_only=True)["state_dict"] if "seg_outputs" in k}
    assert [a[0] for a in rep.adapted] == ["conv_blocks_context.0.0.conv1.weight", "conv_blocks_context.0.0.conv3.weight"]
    sd = torch.load(stunet_dir/"tiny_depth2_v1.model", weights_only=True)["state_dict"]
    w = sd["conv_blocks_context.0.0.conv1.weight"]
    assert torch.equal(net.encoder[0][0].conv1.weight.detach(), torch.cat([w, w], 1))
    assert net(torch.randn(1, 4, 32, 32, 24)).shape == (1, 7, 32, 32, 24)


def test_official_shapes_match_our_variants(stunet_dir):
    "Every tensor of the published STU-Net S/B/L/H maps to a same-shaped tensor of our stunet_* (on the meta device)."
    import json
    from segcook.nets import on_meta
    from segcook.transfer import map_keys, _canonical
    shapes = json.loads((stunet_dir/"official_state_dict_shapes.json").read_text())["variants"]
    for v, off in shapes.items():
        net = on_meta(ARCHS[f"stunet_{v}"], 1, 105, [128, 128, 128], [1, 1, 1], deep_supervision=4)
        ours = {k: list(t.shape) for k, t in _canonical(net).items()}
        mapped = {map_keys(list(off), "stunet")[k]: s for k, s in off.items()}
        assert mapped == ours, v


def _nnunet_pair(kind):
    from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet
    k, s, w = [[3, 3, 3]] * 4, [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 1]], [4, 8, 16, 32]
    common = dict(conv_op=nn.Conv3d, kernel_sizes=k, strides=s, num_classes=3, conv_bias=True, norm_op=nn.InstanceNorm3d,
                  norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True},
                  deep_supervision=True)
    torch.manual_seed(0)
    if kind == "plain":
        ref = PlainConvUNet(2, 4, w, n_conv_per_stage=2, n_conv_per_stage_decoder=2, **common)
        ours = DynamicUNet(2, 3, k, s, w, deep_supervision=2)
    else:
        ref = ResidualEncoderUNet(2, 4, w, n_blocks_per_stage=[1, 2, 2, 2], n_conv_per_stage_decoder=1, **common)
        ours = ResEncUNet(2, 3, k, s, w, [1, 2, 2, 2], 1, deep_supervision=2)
    with torch.no_grad():   # norm affines away from 1/0, so that a swapped norm would show
        for n, p in ref.named_parameters():
            if "norm" in n: p.add_(torch.randn_like(p) * 0.3)
    return ref, ours


@pytest.mark.parametrize("kind", ["plain", "resenc"])
def test_nnunet_v2_checkpoint_equal_output(kind, tmp_path):
    ref, ours = _nnunet_pair(kind)
    torch.save({"network_weights": {f"module.{k}": v for k, v in ref.state_dict().items()}, "trainer_name": "nnUNetTrainer",
                "current_epoch": 1000, "init_args": {"fold": 0}}, tmp_path/"checkpoint_final.pth")
    rep = load_pretrained(ours, tmp_path/"checkpoint_final.pth", reinit_head=False)
    assert rep.layout == f"nnunet_{kind}" and not (rep.unmatched or rep.mismatched or rep.missing)
    assert len(rep.loaded) == len(dict(ours.named_parameters()))
    x = torch.randn(2, 2, 32, 32, 16)
    with torch.no_grad():
        ref.eval().decoder.deep_supervision = False
        diff = (ref(x) - ours.eval()(x)).abs().max().item()
        ref.train().decoder.deep_supervision = True
        ds = [(a - b).abs().max().item() for a, b in zip(ref(x), ours.train()(x))]
    print(f"nnU-Net {kind}: max |ours - dynamic-network-architectures| = {diff:.2e}, deep supervision {max(ds):.2e}")
    assert diff < 1e-5 and len(ds) == 3 and max(ds) < 1e-5


def test_nnunet_registered_archs_load(tmp_path):
    "The registered builders take nnU-Net's weights for the same topology (heads re-initialised: other classes)."
    from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet
    from segcook.nets import get_topology
    k, s = get_topology([32, 32, 32], [1, 1, 1])
    ref = ResidualEncoderUNet(1, len(s), [8, 16, 32, 64], nn.Conv3d, k, s, [1, 3, 4, 6], 5, 1, True, nn.InstanceNorm3d,
                              {"eps": 1e-5, "affine": True}, nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True})
    torch.save({"network_weights": ref.state_dict()}, tmp_path/"checkpoint_final.pth")
    net = ARCHS["nnunet_resenc"](1, 2, [32, 32, 32], [1, 1, 1], base=8)
    rep = load_pretrained(net, tmp_path/"checkpoint_final.pth")
    assert rep.loaded and all(r.startswith("head") for _, _, r in rep.skipped if r != "alias")


# --- bad input ---------------------------------------------------------------------------------

class Evil:
    def __reduce__(self): return (print, ("this ran",))


def test_refuses_pickled_code(tmp_path, capsys):
    torch.save({"state_dict": {"w": torch.ones(1)}, "trainer": Evil()}, tmp_path/"evil.model")
    with pytest.raises(SegcookError, match=r"evil\.model: refused: this file needs pickled code to load \(it asks for print\)"):
        load_pretrained(STUNet(2, 3, **TINY, depth=1), tmp_path/"evil.model")
    assert "this ran" not in capsys.readouterr().out


@pytest.mark.parametrize("obj,msg", [(torch.ones(3), "not a state dict: found a Tensor"), ([1, 2], "not a state dict: found a list"),
                                     ({"state_dict": {"w": 3}}, r"not a state dict: found non-tensor entries w \(int\)"),
                                     ({}, "not a state dict: it is empty")])
def test_refuses_non_state_dicts(tmp_path, obj, msg):
    torch.save(obj, tmp_path/"x.pt")
    with pytest.raises(SegcookError, match=msg): read_checkpoint(tmp_path/"x.pt")


def test_refuses_unknown_layout_and_garbage(tmp_path):
    torch.save({"fc.weight": torch.ones(2, 2)}, tmp_path/"resnet.pt")
    with pytest.raises(SegcookError, match=r"matches no known layout: found keys like \['fc.weight'\]"):
        load_pretrained(STUNet(2, 3, **TINY, depth=1), tmp_path/"resnet.pt")
    (tmp_path/"junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(SegcookError, match="junk.pth: not a PyTorch checkpoint"):
        read_checkpoint(tmp_path/"junk.pth")
    with pytest.raises(SegcookError, match="does not exist"): read_checkpoint(tmp_path/"missing.pth")


def test_shape_mismatch_names_keys_and_leaves_net_untouched(stunet_dir):
    net = STUNet(2, 3, TINY["kernels"], TINY["strides"], [2, 4, 8, 16, 32, 64], 1)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(SegcookError) as e: load_pretrained(net, stunet_dir/"tiny_depth1_v1.model")
    msg = str(e.value)
    assert "conv_blocks_context.5.0.conv1.weight" in msg and "encoder.5.0.conv1.weight" in msg
    assert "shape [32, 32, 3, 3, 3] in the checkpoint" in msg and "[64, 32, 3, 3, 3] here" in msg and "strict=False" in msg
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    with pytest.raises(SegcookError, match="here, not in the checkpoint: encoder.0.1"):   # depth 2 net, depth 1 file
        load_pretrained(STUNet(2, 3, **TINY, depth=2), stunet_dir/"tiny_depth1_v1.model")


def test_segcook_checkpoint_roundtrip_and_nothing_written(tmp_path):
    src = ARCHS["stunet_s"](1, 3, [32, 32, 32], [1, 1, 1], base=2)
    d = tmp_path/"pre"; d.mkdir()
    torch.save({"format": "segcook-ckpt-1", "model": src.state_dict(), "epoch": 3}, d/"best.pt")
    (d/"best.pt").chmod(0o444)
    net = ARCHS["stunet_s"](1, 3, [32, 32, 32], [1, 1, 1], base=2)
    rep = load_pretrained(net, d/"best.pt", reinit_head=False)
    assert rep.container == "segcook" and rep.layout == "segcook" and not rep.missing
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad(): assert torch.equal(src.eval()(x), net.eval()(x))
    assert [p.name for p in d.iterdir()] == ["best.pt"]


# --- parts, freezing, head learning rate ------------------------------------------------------------

@pytest.mark.parametrize("name,ps,kw", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_every_arch_has_every_part(name, ps, kw):
    from segcook.nets import on_meta
    net = on_meta(ARCHS[name], 2, 3, ps, [1.0, 1.0, 1.0], **kw)
    p = parts(net)
    assert set(p) == set(PARTS)
    ids = [id(t) for k in ("encoder", "decoder", "head") for t in p[k].parameters()]
    assert sorted(ids) == sorted(id(t) for t in net.parameters())   # each parameter in exactly one
    body = {id(t) for k in ("encoder", "decoder") for t in p[k].parameters()}
    mid = {id(t) for t in p["middle"].parameters()}
    assert mid and mid <= body and mid & {id(t) for t in p["encoder"].parameters()} and mid & {id(t) for t in p["decoder"].parameters()}


@pytest.mark.parametrize("part", ["encoder", "decoder", "middle"])
def test_frozen_params_do_not_change_across_a_step(part):
    torch.manual_seed(0)
    net = ARCHS["nnunet"](1, 2, [32, 32, 16], [1, 1, 1], base=4).train()
    freeze(net, part)
    frozen = {id(t) for t in parts(net)[part].parameters()}
    groups = param_groups(net, 0.01, head_lr_mult=10)
    assert not frozen & {id(t) for g in groups for t in g["params"]}
    opt = torch.optim.AdamW(groups, weight_decay=0.1)
    before = {n: t.detach().clone() for n, t in net.named_parameters()}
    net(torch.randn(2, 1, 32, 32, 16)).square().mean().backward(); opt.step()
    for n, t in net.named_parameters():
        assert torch.equal(before[n], t.detach()) == (id(t) in frozen), n


def test_bad_controls_name_both_sides():
    net = ARCHS["stunet_s"](1, 2, [32, 32, 32], [1, 1, 1], base=2)
    with pytest.raises(SegcookError, match=r"\['bottleneck'\] is not a part of STUNet; its parts are \['encoder', 'middle', 'decoder', 'head'\]"):
        freeze(net, "bottleneck")
    with pytest.raises(SegcookError, match=r"head_lr_mult must be > 0 \(got -1\).*lr 0.01"):
        param_groups(net, 0.01, -1)
    with pytest.raises(SegcookError, match="has 6 encoder and 5 decoder stages"): parts(net, 6)


# --- segcook train --pretrained --freeze --head-lr (CPU and DDP over gloo) ---------------------------------

@pytest.fixture(scope="module")
def pre_exp(tmp_path_factory):
    "A tiny phantom experiment whose fold 0 is trained (the pretrained weights)."
    from segcook.train import toy_experiment, train
    exp = toy_experiment(tmp_path_factory.mktemp("ft")/"exp", cases=4, size=(24, 24, 16), patch=(16, 16, 16), nfolds=2,
                         val_fraction=0.5, epochs=1, steps_per_epoch=1, batch_size=2, arch_kwargs={"base": 4})
    train(exp, folds=[0], loader="global")
    return exp


def _check_finetuned(exp, part_prefix="decoder."):
    from segcook.train import load_checkpoint
    pre = load_checkpoint(exp/"models/fold_0/last.pt")["model"]
    ck = load_checkpoint(exp/"models/fold_1/last.pt")
    a, b = pre, ck["model"]
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith(part_prefix))               # frozen: unchanged
    assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith("encoder."))            # trained: moved
    groups = ck["optimizer"]["param_groups"]
    assert [g["name"] for g in groups] == ["body", "head"] and groups[1]["lr"] == pytest.approx(10 * groups[0]["lr"])
    from segcook.core import plan_from_dict
    from segcook.nets import build_net
    net = build_net(plan_from_dict(ck["plan"]))
    n_trainable = sum(1 for k, _ in net.named_parameters() if not k.startswith(part_prefix))
    assert sum(len(g["params"]) for g in groups) == n_trainable                               # no frozen parameter in the optimiser
    assert len(ck["optimizer"]["state"]) <= n_trainable
    assert ck["plan"]["train"]["pretrained"] and ck["plan"]["train"]["freeze"] == "decoder"


def test_cli_train_pretrained_freeze_head_lr(pre_exp, tmp_path):
    from segcook.train import cli_train
    exp = tmp_path/"exp"; __import__("shutil").copytree(pre_exp, exp)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in (exp/"models/fold_0").iterdir())
    rc = cli_train(["--exp", str(exp), "--folds", "1", "--epochs", "1", "--steps-per-epoch", "1", "--loader", "global",
                    "--pretrained", str(exp/"models/fold_0/last.pt"), "--freeze", "decoder", "--head-lr", "10"])
    assert rc == 0
    _check_finetuned(exp)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in (exp/"models/fold_0").iterdir()) == before   # nothing written there
    assert __import__("json").loads((exp/"config.json").read_text())["train"].get("pretrained") is None   # not written back


def test_train_pretrained_freeze_ddp_gloo(pre_exp, tmp_path):
    from segcook.train import train
    exp = tmp_path/"exp"; __import__("shutil").copytree(pre_exp, exp)
    train(exp, folds=[1], procs=2, epochs=1, steps_per_epoch=1, batch_size=1, loader="global",
          pretrained=str(exp/"models/fold_0/last.pt"), freeze="decoder", head_lr_mult=10)
    _check_finetuned(exp)


def test_train_bad_freeze_is_clear(pre_exp, tmp_path):
    from segcook.train import train
    exp = tmp_path/"exp"; __import__("shutil").copytree(pre_exp, exp)
    with pytest.raises(SegcookError, match=r"train.head_lr_mult must be > 0, got 0"):
        train(exp, folds=[1], epochs=1, steps_per_epoch=1, loader="global", head_lr_mult=0)
    with pytest.raises(SegcookError, match=r"train.freeze 'bottleneck' is not a part; use one of \['none', 'encoder'"):
        train(exp, folds=[1], epochs=1, steps_per_epoch=1, loader="global", freeze="bottleneck")


def test_gradual_unfreezing_ddp_gloo_and_resume(pre_exp, tmp_path):
    "Decoder frozen in epoch 1 (unchanged), trained from epoch 2 on, in 2 gloo processes; an interrupted run resumes with the new group."
    from segcook.train import train, load_checkpoint
    exp = tmp_path/"exp"; __import__("shutil").copytree(pre_exp, exp)
    pre = load_checkpoint(exp/"models/fold_0/last.pt")["model"]
    kw = dict(folds=[1], procs=2, steps_per_epoch=1, batch_size=2, loader="global", pretrained=str(exp/"models/fold_0/last.pt"),
              freeze="decoder", head_lr_mult=10, unfreeze_after=1)
    train(exp, epochs=1, **kw)
    one = load_checkpoint(exp/"models/fold_1/last.pt")
    dec = [k for k in pre if k.startswith("decoder.") and pre[k].is_floating_point()]
    assert all(torch.equal(pre[k], one["model"][k]) for k in dec)                          # still frozen in epoch 1
    assert [g["name"] for g in one["optimizer"]["param_groups"]] == ["body", "head"]
    train(exp, epochs=3, extend=True, **kw)                                                  # epochs 2-3: unfrozen
    three = load_checkpoint(exp/"models/fold_1/last.pt")
    groups = three["optimizer"]["param_groups"]
    assert [g["name"] for g in groups] == ["body", "head", "unfrozen"] and three["epoch"] == 3
    assert groups[2]["lr"] == pytest.approx(groups[0]["lr"])
    assert any(not torch.equal(pre[k], three["model"][k]) for k in dec)                     # the decoder trained
    from segcook.core import plan_from_dict
    from segcook.nets import build_net
    n = sum(1 for _ in build_net(plan_from_dict(three["plan"])).parameters())
    assert sum(len(g["params"]) for g in groups) == n                                        # every parameter exactly once


def test_finetune_plan_checked_up_front(pre_exp, tmp_path, caplog):
    from segcook.train import train
    from segcook.core import load_plan, save_plan
    exp = tmp_path/"exp"; __import__("shutil").copytree(pre_exp, exp)
    ck = str(exp/"models/fold_0/last.pt")
    with pytest.raises(SegcookError, match=r"train.unfreeze_after=2 but train.freeze is 'none'"):
        train(exp, folds=[1], epochs=3, steps_per_epoch=1, loader="global", pretrained=ck, unfreeze_after=2)
    with pytest.raises(SegcookError, match=r"train.pretrained .*nope.pt: no such file"):
        train(exp, folds=[1], epochs=1, steps_per_epoch=1, loader="global", pretrained=str(tmp_path/"nope.pt"))
    with pytest.raises(SegcookError, match=r"architecture: the pretrained model is 'nnunet', this plan trains 'unet'"):
        train(exp, folds=[1], epochs=1, steps_per_epoch=1, loader="global", pretrained=ck, arch="unet")
    assert not (exp/"models/fold_1").exists()                                                # refused before anything ran
    p = load_plan(exp); p.spatial.target_spacing = [x * 2 for x in p.spatial.target_spacing]; p.channels[0].modality = "ct"
    save_plan(p, exp/"config.json")
    with caplog.at_level("WARNING", logger="segcook"):
        train(exp, folds=[1], epochs=1, steps_per_epoch=1, loader="global", pretrained=ck)
    said = caplog.text
    assert "spacing: pretrained at" in said and "modality: pretrained on mr, fine-tuning on ct, mr, mr, mr" in said


def test_cli_unfreeze_after_and_warmup(pre_exp, tmp_path):
    from segcook.train import cli_train, load_checkpoint
    exp = tmp_path/"exp"; __import__("shutil").copytree(pre_exp, exp)
    rc = cli_train(["--exp", str(exp), "--folds", "1", "--epochs", "2", "--steps-per-epoch", "1", "--loader", "global",
                    "--pretrained", str(exp/"models/fold_0/last.pt"), "--freeze", "encoder", "--unfreeze-after", "1", "--warmup", "1"])
    assert rc == 0
    ck = load_checkpoint(exp/"models/fold_1/last.pt")
    assert (ck["plan"]["train"]["unfreeze_after"], ck["plan"]["train"]["warmup_epochs"]) == (1, 1)
    assert [g["name"] for g in ck["optimizer"]["param_groups"]] == ["body", "head", "unfrozen"]
    lrs = [h["lr"] for h in ck["history"]]
    assert lrs[0] < lrs[1]                                                  # warming up in epoch 1
    assert cli_train(["--exp", str(exp), "--folds", "1", "--epochs", "2", "--loader", "global", "--overwrite",
                      "--unfreeze-after", "-1", "--freeze", "encoder"]) == 2   # refused, clear message, exit code 2
