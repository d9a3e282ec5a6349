"""The reference-size bundle's parts (vildtrain.export.export_reference).

The whole export (about 5 minutes and 560 MB) runs in ``make reference``, which
then checks it from Go; these tests check the parts against what they stand
for: torchvision's Mask R-CNN R50-FPN, OpenAI CLIP ViT-B/32's text tower and
CLIP's tokenizer files.
"""
import gzip
import json
import os

import pytest
import torch
from torch import nn
from torchvision.models.detection import maskrcnn_resnet50_fpn

from vildtrain.export import export_reference as ref
from vildtrain.models import reference as arch
from vildtrain.export.export import manifest
from vildtrain.text import clip_tokenizer


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("tok"))
    ref.write_tokenizer(d)
    return d


def test_tokenizer_files_have_clips_format_and_size(tokenizer_dir):
    with open(os.path.join(tokenizer_dir, "vocab.json"), encoding="utf-8") as f:
        vocab = json.load(f)
    assert len(vocab) == 49408
    assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407
    assert sorted(vocab.values()) == list(range(49408))
    with open(os.path.join(tokenizer_dir, "merges.txt"), encoding="utf-8") as f:
        lines = f.read().split("\n")
    assert lines[0] == "#version: 0.2" and lines[-1] == ""
    assert len(lines) - 2 == clip_tokenizer.CLIP_MERGES == 48894
    tok = clip_tokenizer.load(tokenizer_dir)
    # the trained merges come first: common words are single tokens, built from merges of merges
    assert len(tok.encode("photo")) == 1 and len(tok.encode("a photo of a dog.")) == 6
    ids = tok.encode_batch(["a photo of a dog."], 77)[0]
    assert ids[0] == 49406 and ids[7] == 49407 and not ids[8:].any()


def test_tokenizer_reads_the_same_as_clips_gzip(tokenizer_dir, tmp_path):
    with open(os.path.join(tokenizer_dir, "merges.txt"), encoding="utf-8") as f:
        merges = f.read().split("\n", 1)[1]
    with gzip.open(tmp_path / "bpe_simple_vocab_16e6.txt.gz", "wt", encoding="utf-8") as f:
        f.write('"bpe_simple_vocab_16e6.txt#version: 0.2\n' + merges + "extra line\n")
    a, b = clip_tokenizer.load(tokenizer_dir), clip_tokenizer.load(str(tmp_path))
    assert a.encoder == b.encoder
    text = "there is a hot air balloon in the scene. 🎈 café"
    assert a.encode_context(text, 77) == b.encode_context(text, 77)


def test_text_tower_has_openai_clip_b32_names_and_shapes():
    tower = arch.ClipTextTower(**arch.CLIP_B32_TEXT)
    got = {k: tuple(v.shape) for k, v in tower.state_dict().items()}
    want = {"token_embedding.weight": (49408, 512), "positional_embedding": (77, 512),
            "ln_final.weight": (512,), "ln_final.bias": (512,), "text_projection": (512, 512)}
    for i in range(12):
        p = f"transformer.resblocks.{i}."
        want.update({p + "attn.in_proj_weight": (1536, 512), p + "attn.in_proj_bias": (1536,),
                     p + "attn.out_proj.weight": (512, 512), p + "attn.out_proj.bias": (512,),
                     p + "ln_1.weight": (512,), p + "ln_1.bias": (512,), p + "ln_2.weight": (512,),
                     p + "ln_2.bias": (512,), p + "mlp.c_fc.weight": (2048, 512), p + "mlp.c_fc.bias": (2048,),
                     p + "mlp.c_proj.weight": (512, 2048), p + "mlp.c_proj.bias": (512,)})
    assert got == want


def test_attention_is_multihead_attention_with_a_causal_mask():
    torch.manual_seed(0)
    attn = arch.Attention(32, 4)
    nn.init.normal_(attn.in_proj_weight, std=0.2)
    nn.init.normal_(attn.in_proj_bias, std=0.1)
    mha = nn.MultiheadAttention(32, 4, batch_first=True)
    mha.load_state_dict(attn.state_dict())
    x = torch.randn(3, 9, 32)
    mask = torch.full((9, 9), float("-inf")).triu(1)
    want, _ = mha(x, x, x, attn_mask=mask, need_weights=False)
    assert torch.allclose(attn(x, mask), want, atol=1e-6)


def test_padding_after_the_end_token_does_not_matter():
    torch.manual_seed(0)
    tower = arch.ClipTextTower(vocab_size=100, context_length=16, width=32, layers=2, heads=4, embed_dim=8).eval()
    ids = torch.zeros(2, 16, dtype=torch.int64)
    ids[0, :5] = torch.tensor([98, 5, 6, 7, 99])
    ids[1, :3] = torch.tensor([98, 9, 99])
    full = tower.encode_text(ids)
    assert torch.allclose(tower.encode_trimmed(ids), full, atol=1e-6)
    other = ids.clone()
    other[:, 6:] = 42   # garbage after the end token
    assert torch.allclose(tower.encode_text(other), full, atol=1e-6)
    assert torch.allclose(full.norm(dim=-1), torch.ones(2))


def test_detector_has_torchvision_mask_rcnn_names_and_shapes():
    cfg = arch.reference_config()
    model = arch.build_detector(cfg)
    tv = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None).state_dict()
    ours = model.state_dict()
    for prefix in ("backbone.", "rpn.head."):
        want = {k: tuple(v.shape) for k, v in tv.items() if k.startswith(prefix) and "num_batches" not in k}
        got = {k: tuple(v.shape) for k, v in ours.items() if k.startswith(prefix) and "num_batches" not in k}
        assert got == want, prefix
    for fc in ("fc6", "fc7"):
        for p in ("weight", "bias"):
            assert ours[f"box_head.box_head.{fc}.{p}"].shape == tv[f"roi_heads.box_head.{fc}.{p}"].shape
    assert ours["box_head.text_proj.weight"].shape == ours["box_head.image_proj.weight"].shape == (512, 1024)


def test_manifest_numbers_are_the_reference_sizes():
    tower = arch.ClipTextTower(vocab_size=100, context_length=77, width=8, layers=1, heads=2, embed_dim=512)
    cats = ref.reference_categories(1000)
    m = manifest(arch.reference_config(), tower, cats, {}, ref.NAME)
    assert m["input"]["max_side"] == 1024 and m["input"]["size_divisible"] == 64
    assert [(lv["name"], lv["stride"], lv["anchor_sizes"], lv["roi"]) for lv in m["fpn"]["levels"]] == [
        ("p2", 4, [32], True), ("p3", 8, [64], True), ("p4", 16, [128], True), ("p5", 32, [256], True),
        ("p6", 64, [512], False)]
    assert m["fpn"]["channels"] == 256 and m["anchors"]["aspect_ratios"] == [0.5, 1.0, 2.0]
    assert m["rpn"]["pre_nms_top_n"] == m["rpn"]["post_nms_top_n"] == 1000
    assert m["embedding"]["dim"] == 512 and m["text"]["context_length"] == 77
    assert len({c["name"] for c in m["categories"]}) == 1000


def test_unknown_arch_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown --arch"):
        ref.export_reference(str(tmp_path / "out"), arch="r101")


def test_the_issue_spelling_runs_the_command(capsys):
    from vildtrain.__main__ import main
    with pytest.raises(SystemExit) as done:
        main(["export-reference", "--help"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith("usage: vildtrain export_reference")
    assert main(["export-nothing"]) == 2
