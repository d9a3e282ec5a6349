"""Mini-CLIP: model interface, checkpoint round trip, and a training smoke run
that shows the loss falling and resuming reproducing an uninterrupted run."""
import json
import os

import pytest
import torch

from vildtrain.models import miniclip as miniclip_module
from vildtrain.train import train_clip
from vildtrain.models.miniclip import (MiniClip, MiniClipConfig, check_teacher, load_miniclip, load_teacher,
                                       miniclip_digest, save_miniclip, teacher_record)

TINY = ["--batch", "8", "--max-categories", "8", "--image-size", "32", "--widths", "8,16,16,32",
        "--text-width", "32", "--text-layers", "1", "--embed-dim", "32", "--backgrounds", "16",
        "--eval-every", "100000", "--eval-crops", "1", "--warmup", "5", "--lr", "1e-2", "--threads", "1", "--procs", "2",
        "--scene-crops", "0"]  # the scene-crop path has its own test with a small bank


def tiny_config() -> MiniClipConfig:
    return MiniClipConfig(image_size=32, embed_dim=16, widths=(8, 8, 16, 16), vocab_size=600,
                          context_length=12, text_width=32, text_layers=1, text_heads=2)


def test_encoders_give_unit_vectors_and_ignore_padding_width():
    torch.manual_seed(0)
    model = MiniClip(tiny_config()).eval()
    img = model.encode_image(torch.rand(3, 3, 40, 40))  # resized to 32 internally
    assert img.shape == (3, 16)
    assert torch.allclose(img.norm(dim=1), torch.ones(3), atol=1e-5)
    ids = torch.zeros(2, 12, dtype=torch.int64)
    ids[:, 0] = 598
    ids[:, 1:4] = torch.tensor([[5, 6, 7], [8, 9, 10]])
    ids[:, 4] = 599  # end token: the largest id
    full = model.encode_text(ids)
    short = model.encode_text(ids[:, :5])  # causal attention: trailing padding changes nothing
    assert torch.allclose(full, short, atol=1e-5)
    assert torch.allclose(full.norm(dim=1), torch.ones(2), atol=1e-5)


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = MiniClip(tiny_config()).eval()
    path = str(tmp_path / "m.pt")
    save_miniclip(model, path, half=False)
    again = load_miniclip(path)
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(model.encode_image(x), again.encode_image(x), atol=1e-6)


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_clip"):
        load_miniclip(str(tmp_path / "none.pt"))


def losses(out_dir: str) -> list[float]:
    with open(os.path.join(out_dir, "log.jsonl")) as f:
        return [r["loss"] for r in map(json.loads, f) if "loss" in r]


def test_training_smoke_loss_falls_and_resume_is_exact(tmp_path):
    straight = str(tmp_path / "straight")
    assert train_clip.main(TINY + ["--steps", "60", "--log-every", "10", "--out", straight,
                                   "--checkpoint", straight + "/m.pt"]) == 0
    seen = losses(straight)
    assert len(seen) == 6
    assert sum(seen[-2:]) < 0.6 * sum(seen[:2]), seen
    metrics = json.load(open(os.path.join(straight, "metrics.json")))
    # 8 categories: chance is 1/8; the tiny model must do clearly better
    assert metrics["zero_shot_top1"]["seen"] >= 0.25, metrics

    resumed = str(tmp_path / "resumed")
    args = TINY + ["--log-every", "10", "--save-every", "30", "--out", resumed, "--checkpoint", resumed + "/m.pt"]
    # a 20-step run, then the same command asked for 40 steps, is not allowed to mix
    # schedules: resuming requires the same --steps, so interrupt by stopping at a save.
    assert train_clip.main(args + ["--steps", "60", "--stop-after", "30"]) == 0
    assert train_clip.main(args + ["--steps", "60"]) == 0
    a, b = load_miniclip(straight + "/m.pt"), load_miniclip(resumed + "/m.pt")
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(p.float(), q.float(), atol=1e-3), name


def test_scene_crop_boxes_match_the_teachers_crops_without_jitter():
    import numpy as np

    from vildtrain.models.losses import crop_boxes
    from vildtrain.train.clipdata import jittered_square_boxes
    boxes = torch.tensor([[10.0, 20.0, 50.0, 40.0], [0.0, 0.0, 8.0, 30.0]])
    rng = np.random.default_rng(0)
    for s in (1.0, 1.5):
        assert torch.allclose(jittered_square_boxes(boxes, rng, 0.0, (s, s)), crop_boxes(boxes, s), atol=1e-5)
    moved = jittered_square_boxes(boxes, rng, 0.1, (1.0, 1.5))
    side = moved[:, 2] - moved[:, 0]
    assert torch.allclose(side, moved[:, 3] - moved[:, 1])          # squares
    assert bool((side >= 0.8 * 40).all()) and bool((side <= 1.5 * 1.2 * 40).all()), side


def test_scene_bank_is_seeded_and_labels_every_visible_object():
    from vildtrain.data.art import STYLES_TRAIN, ArtLibrary
    from vildtrain.data.categories import load_categories
    from vildtrain.data.scenes import generate_scene, scene_rng
    from vildtrain.train.clipdata import build_scene_bank
    cats = load_categories()
    art = ArtLibrary()
    a = build_scene_bank(art, cats, STYLES_TRAIN, 4, seed=11, size=24)
    b = build_scene_bank(art, cats, STYLES_TRAIN, 4, seed=11, size=24)
    assert torch.equal(a.crops, b.crops) and torch.equal(a.labels, b.labels)
    assert a.crops.dtype == torch.uint8 and a.crops.shape[1:] == (3, 24, 24)
    objects = [generate_scene(scene_rng(11, i), art, cats, STYLES_TRAIN, label_novel=True)[1] for i in range(4)]
    assert a.labels.tolist() == [next(k for k, c in enumerate(cats) if c.id == o.category_id)
                                 for objs in objects for o in objs]
    # a crop at 1x without jitter is the object's square: mostly not the scene's mean colour
    assert float(a.images(torch.arange(len(a))).std()) > 0.05
    with pytest.raises(ValueError, match="at least 1"):
        build_scene_bank(art, cats, STYLES_TRAIN, 0, seed=11)


def test_shaded_art_is_added_beside_the_flat_art():
    from vildtrain.data.art import STYLES_TRAIN, ArtLibrary
    from vildtrain.data.categories import load_categories
    from vildtrain.train.clipdata import build_art_bank, build_scene_bank
    cats, art = load_categories()[:30], ArtLibrary()
    flat = build_art_bank(art, cats, STYLES_TRAIN)
    shaded = build_art_bank(art, cats, STYLES_TRAIN, shade=0.5, seed=3)
    extra = [i for i, s in enumerate(shaded.styles) if s.endswith("+shade")]
    assert 0.3 * len(flat) < len(extra) < 0.7 * len(flat) and len(shaded) == len(flat) + len(extra)
    plain = [i for i, s in enumerate(shaded.styles) if not s.endswith("+shade")]
    assert torch.equal(shaded.rgba[plain], flat.rgba) and shaded.labels[plain].tolist() == flat.labels.tolist()
    for i in extra:   # each shaded copy follows its flat tile: same label and alpha, other colours
        assert shaded.labels[i] == shaded.labels[i - 1] and torch.equal(shaded.rgba[i, 3], shaded.rgba[i - 1, 3])
    assert float((shaded.rgba[extra, :3] - shaded.rgba[[i - 1 for i in extra], :3]).abs().mean()) > 0.02
    a = build_scene_bank(art, cats, STYLES_TRAIN, 4, seed=11, size=24)
    b = build_scene_bank(art, cats, STYLES_TRAIN, 4, seed=11, size=24, shade_p=1.0)
    c = build_scene_bank(art, cats, STYLES_TRAIN, 4, seed=11, size=24, shade_p=1.0)
    assert torch.equal(b.crops, c.crops)   # seeded; lighting draws from the scene's generator
    assert a.crops.shape != b.crops.shape or not torch.equal(a.crops, b.crops)


def test_training_with_scene_crops_reports_in_context_top1(tmp_path):
    out = str(tmp_path / "scenes")
    assert train_clip.main(TINY + ["--steps", "10", "--log-every", "5", "--scene-crops", "1.0", "--scene-bank", "30",
                                   "--in-context-scenes", "10", "--out", out, "--checkpoint", out + "/m.pt"]) == 0
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert metrics["scene_crops"]["share"] == 1.0 and metrics["scene_crops"]["bank_crops"] > 0
    ctx = metrics["in_context_top1"]
    assert ctx["crops"] > 0 and 0.0 <= ctx["all"] <= 1.0
    assert train_clip.main(TINY + ["--scene-crops", "1.5", "--out", out]) == 2


def _two_clips(tmp_path):
    """Two tiny mini-CLIPs that differ in one weight, saved as a.pt and b.pt."""
    torch.manual_seed(3)
    a = MiniClip(tiny_config()).eval()
    b = MiniClip(tiny_config()).eval()
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        b.logit_scale.add_(0.5)
    save_miniclip(a, str(tmp_path / "a.pt"))
    save_miniclip(b, str(tmp_path / "b.pt"))
    return a, b


def test_digest_names_the_weights_not_the_file(tmp_path):
    a, b = _two_clips(tmp_path)
    assert miniclip_digest(a) != miniclip_digest(b)
    loaded = load_miniclip(str(tmp_path / "a.pt"))
    assert miniclip_digest(loaded) == miniclip_digest(a)           # saved fp16, loaded fp32: the same
    os.rename(tmp_path / "a.pt", tmp_path / "renamed.pt")
    assert miniclip_digest(load_miniclip(str(tmp_path / "renamed.pt"))) == miniclip_digest(a)
    rec = teacher_record(loaded)
    assert rec["digest"] == miniclip_digest(a)
    assert os.path.normpath(os.path.join(miniclip_module.REPO, rec["path"])) == str(tmp_path / "a.pt")
    assert teacher_record(a) == {"digest": miniclip_digest(a)}      # in memory: no path


def test_a_detector_is_scored_with_its_own_teacher(tmp_path, monkeypatch, capsys):
    a, b = _two_clips(tmp_path)
    extra = {"teacher": teacher_record(load_miniclip(str(tmp_path / "a.pt")))}
    # asked for by path: the right one loads, another is refused with both digests named
    clip, path = load_teacher(extra, str(tmp_path / "a.pt"))
    assert path == str(tmp_path / "a.pt") and miniclip_digest(clip) == miniclip_digest(a)
    with pytest.raises(ValueError, match=miniclip_digest(a)) as err:
        load_teacher(extra, str(tmp_path / "b.pt"))
    assert miniclip_digest(b) in str(err.value) and "--miniclip" in str(err.value)
    # no path: the default when it is the teacher ...
    monkeypatch.setattr(miniclip_module, "DEFAULT_CHECKPOINT", str(tmp_path / "a.pt"))
    assert load_teacher(extra)[1] == str(tmp_path / "a.pt")
    # ... else the recorded checkpoint, said aloud
    monkeypatch.setattr(miniclip_module, "DEFAULT_CHECKPOINT", str(tmp_path / "b.pt"))
    clip, path = load_teacher(extra)
    assert path == str(tmp_path / "a.pt")
    assert miniclip_digest(clip) == miniclip_digest(a)
    assert "distilled from" in capsys.readouterr().err
    # ... and when neither is it, a clear error
    os.remove(tmp_path / "a.pt")
    with pytest.raises(ValueError, match="missing"):
        load_teacher(extra)
    # a model in memory is checked the same way; a detector without a record takes what it is given
    check_teacher(extra, a)
    with pytest.raises(ValueError, match="distilled from"):
        check_teacher(extra, b)
    assert load_teacher({}, str(tmp_path / "b.pt"))[1] == str(tmp_path / "b.pt")


def test_init_with_frozen_text_teaches_only_the_image_tower(tmp_path):
    """--init starts from a saved mini-CLIP; --freeze-text keeps its text tower (so
    every category embedding a detector was trained against) bit for bit."""
    first = str(tmp_path / "first")
    assert train_clip.main(TINY + ["--steps", "10", "--out", first, "--checkpoint", first + "/m.pt",
                                   "--styles", "train"]) == 0
    more = str(tmp_path / "more")
    assert train_clip.main(TINY + ["--steps", "10", "--out", more, "--checkpoint", more + "/m.pt",
                                   "--init", first + "/m.pt", "--freeze-text", "--styles", "teacher"]) == 0
    a, b = load_miniclip(first + "/m.pt"), load_miniclip(more + "/m.pt")
    for (name, p), q in zip(a.text.state_dict().items(), b.text.state_dict().values()):
        assert torch.equal(p, q), name
    assert any(not torch.equal(p, q) for p, q in zip(a.image.state_dict().values(), b.image.state_dict().values()))
    metrics = json.load(open(os.path.join(more, "metrics.json")))
    assert metrics["init"]["freeze_text"] and "openmoji" in metrics["styles"] and "fluent3d" not in metrics["styles"]


def test_mixstyle_mixes_feature_statistics_only_while_training():
    """MixStyle is the identity in eval mode and at p = 0; at p = 1 in training each
    sample's per-channel mean and deviation become a mix of its own and another's,
    and what is normalised away is the sample's own statistics."""
    torch.manual_seed(0)
    mix = miniclip_module.MixStyle(p=1.0, alpha=0.1)
    x = torch.randn(6, 4, 8, 8) * torch.arange(1, 7).view(6, 1, 1, 1) + torch.arange(6).view(6, 1, 1, 1)
    assert torch.equal(mix.eval()(x), x)
    assert torch.equal(miniclip_module.MixStyle(p=0.0).train()(x), x)
    mix.train()
    torch.manual_seed(1)
    y = mix(x)
    assert y.shape == x.shape and not torch.allclose(y, x)
    mu, sig = x.mean(dim=(2, 3)), (x.var(dim=(2, 3)) + 1e-6).sqrt()
    ymu, ysig = y.mean(dim=(2, 3)), (y.var(dim=(2, 3)) + 1e-6).sqrt()
    # every output statistic lies between the sample's own and some other sample's
    lo_mu, hi_mu = mu.min(0).values, mu.max(0).values
    assert bool(((ymu >= lo_mu - 1e-4) & (ymu <= hi_mu + 1e-4)).all())
    assert bool(((ysig >= sig.min(0).values - 1e-4) & (ysig <= sig.max(0).values + 1e-4)).all())
    # the normalised content is kept: y standardised per channel equals x standardised
    assert torch.allclose((y - ymu[..., None, None]) / ysig[..., None, None],
                          (x - mu[..., None, None]) / sig[..., None, None], atol=1e-3)
    # an encoder's mixstyle does nothing to its saved weights or its eval output
    model = MiniClip(tiny_config()).eval()
    img = torch.rand(4, 3, 32, 32)
    before = model.encode_image(img)
    model.image.mixstyle.p = 1.0
    assert torch.equal(model.encode_image(img), before)
    assert not any("mixstyle" in k for k in model.state_dict())


def test_coarsened_crops_keep_only_coarse_shape_and_colour():
    from vildtrain.train.clipdata import coarsen
    x = torch.rand(5, 3, 32, 32)
    assert torch.equal(coarsen(x, 0.0, torch.Generator().manual_seed(0)), x)
    y = coarsen(x, 1.0, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and torch.equal(y, coarsen(x, 1.0, torch.Generator().manual_seed(0)))
    # noise averages away: far less fine detail, the same mean colour per crop
    assert float((y[..., 1:] - y[..., :-1]).abs().mean()) < 0.5 * float((x[..., 1:] - x[..., :-1]).abs().mean())
    assert torch.allclose(y.mean(dim=(2, 3)), x.mean(dim=(2, 3)), atol=0.02)


def test_random_convolutions_change_surfaces_and_keep_where_things_are():
    from vildtrain.train.clipdata import randconv
    x = torch.rand(6, 3, 32, 32)
    assert torch.equal(randconv(x, 0.0, torch.Generator().manual_seed(0)), x)
    y = randconv(x, 1.0, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and torch.equal(y, randconv(x, 1.0, torch.Generator().manual_seed(0)))
    assert float(y.min()) >= 0 and float(y.max()) <= 1 and float((y - x).abs().mean()) > 0.01
    # a 1x1 kernel maps colours pixel by pixel: a square of one colour on another stays a square
    sq = torch.zeros(4, 3, 32, 32)
    sq[:, :, 8:24, 8:24] = torch.tensor([0.9, 0.6, 0.1])[:, None, None]
    sq[:, :, :, :8] += 0.3
    z = randconv(sq, 1.0, torch.Generator().manual_seed(1), kernels=(1,))
    for k in range(4):
        inside, left = z[k, :, 8:24, 8:24].flatten(1), z[k, :, :, :8].flatten(1)
        assert float((inside - inside[:, :1]).abs().max()) < 1e-5 and float((left - left[:, :1]).abs().max()) < 1e-5


def test_training_with_mixstyle_coarse_crops_and_jitter_runs(tmp_path):
    out = str(tmp_path / "mix")
    assert train_clip.main(TINY + ["--steps", "6", "--out", out, "--checkpoint", out + "/m.pt",
                                   "--mixstyle", "1", "--coarse", "0.5", "--randconv", "0.5", "--jitter", "0.3"]) == 0
    assert "--mixstyle" in json.load(open(os.path.join(out, "metrics.json")))["command"]


@pytest.mark.parametrize("extra", [["--freeze-text"], ["--styles", "fluent3d"], ["--styles", "noto,comic"],
                                   ["--init", "/nonexistent/m.pt"], ["--mixstyle", "1.5"], ["--coarse", "-1"], ["--randconv", "2"],
                                   ["--jitter", "-0.1"]])
def test_bad_teacher_options_are_refused(tmp_path, extra, capsys):
    assert train_clip.main(TINY + ["--out", str(tmp_path / "x")] + extra) == 2
    assert "train_clip:" in capsys.readouterr().err
