"""convert_clip on files made here in the layouts users have: OpenAI's
TorchScript archive (modules as in OpenAI's clip/model.py) and Hugging Face's
safetensors + config.json (separate q/k/v projections), random weights."""
import gzip
import json
import os
import shutil
from collections import OrderedDict

import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vildtrain.export import convert_clip
from vildtrain.text import clip_tokenizer

WIDTH, LAYERS, CONTEXT, EMBED = 64, 2, 77, 32


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class OpenAIBlock(nn.Module):
    """OpenAI clip/model.py ResidualAttentionBlock (sequence-first nn.MultiheadAttention)."""

    def __init__(self, width, heads, mask):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(width, width * 4)), ("gelu", QuickGELU()),
                                              ("c_proj", nn.Linear(width * 4, width))]))
        self.ln_2 = nn.LayerNorm(width)
        self.attn_mask = mask

    def forward(self, x):
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=self.attn_mask)[0]
        return x + self.mlp(self.ln_2(x))


class OpenAIClip(nn.Module):
    """The text half of OpenAI's CLIP model, plus a visual part the converter must ignore."""

    def __init__(self, vocab):
        super().__init__()
        mask = torch.full((CONTEXT, CONTEXT), float("-inf")).triu(1)
        self.visual = nn.Linear(3, 3)
        self.transformer = nn.Module()
        self.transformer.resblocks = nn.Sequential(*[OpenAIBlock(WIDTH, WIDTH // 64, mask) for _ in range(LAYERS)])
        self.token_embedding = nn.Embedding(vocab, WIDTH)
        self.positional_embedding = nn.Parameter(torch.randn(CONTEXT, WIDTH) * 0.1)
        self.ln_final = nn.LayerNorm(WIDTH)
        self.text_projection = nn.Parameter(torch.randn(WIDTH, EMBED) * WIDTH ** -0.5)
        self.logit_scale = nn.Parameter(torch.tensor(4.6))
        for p in self.transformer.parameters():
            if p.dim() > 1:
                nn.init.normal_(p, std=0.1)

    def forward(self, text):   # OpenAI's encode_text
        x = self.token_embedding(text) + self.positional_embedding
        x = self.transformer.resblocks(x.permute(1, 0, 2)).permute(1, 0, 2)
        x = self.ln_final(x)
        return x[torch.arange(x.shape[0]), text.argmax(dim=-1)] @ self.text_projection


@pytest.fixture(scope="module")
def tok():
    return clip_tokenizer.load()


def prompts(tok):
    return torch.from_numpy(tok.encode_batch(["a photo of a dog.", "there is a red umbrella in the scene.",
                                              "a teapot"], CONTEXT))


def test_openai_torchscript_archive(tmp_path, tok):
    torch.manual_seed(0)
    model = OpenAIClip(tok.vocab_size).eval()
    ids = prompts(tok)
    with torch.no_grad():
        want = F.normalize(model(ids), dim=-1)
        torch.jit.trace(model, ids).save(str(tmp_path / "ViT-B-32.pt"))
    out = tmp_path / "out"
    summary = convert_clip.convert(str(tmp_path / "ViT-B-32.pt"), str(out), clip_tokenizer.data_dir())
    assert summary["layout"] == "openai-torchscript"
    assert summary["text_encoder"] == {"vocab_size": tok.vocab_size, "context_length": CONTEXT, "width": WIDTH,
                                       "layers": LAYERS, "heads": 1, "embed_dim": EMBED, "activation": "quick_gelu"}
    tower, _ = convert_clip.load_tower(str(tmp_path / "ViT-B-32.pt"))
    with torch.no_grad():
        assert torch.allclose(tower.encode_text(ids), want, atol=1e-5)
    graph = onnx.load(str(out / "text_encoder.onnx"))
    assert [i.name for i in graph.graph.input] == ["input_ids"]
    assert [o.name for o in graph.graph.output] == ["text_embeddings"]
    assert clip_tokenizer.load(str(out / "tokenizer")).encoder == tok.encoder


def to_hf(model: OpenAIClip) -> dict:
    """OpenAI's weights under Hugging Face CLIPModel's keys."""
    sd, p = {}, "text_model."
    sd[p + "embeddings.token_embedding.weight"] = model.token_embedding.weight
    sd[p + "embeddings.position_embedding.weight"] = model.positional_embedding
    sd[p + "embeddings.position_ids"] = torch.arange(CONTEXT)[None]
    for i, blk in enumerate(model.transformer.resblocks):
        q = f"{p}encoder.layers.{i}."
        for part in ("weight", "bias"):
            w = getattr(blk.attn, f"in_proj_{part}").chunk(3)
            for name, t in zip(("q", "k", "v"), w):
                sd[f"{q}self_attn.{name}_proj.{part}"] = t
            sd[f"{q}self_attn.out_proj.{part}"] = getattr(blk.attn.out_proj, part)
            sd[f"{q}layer_norm1.{part}"] = getattr(blk.ln_1, part)
            sd[f"{q}layer_norm2.{part}"] = getattr(blk.ln_2, part)
            sd[f"{q}mlp.fc1.{part}"] = getattr(blk.mlp.c_fc, part)
            sd[f"{q}mlp.fc2.{part}"] = getattr(blk.mlp.c_proj, part)
    sd[p + "final_layer_norm.weight"] = model.ln_final.weight
    sd[p + "final_layer_norm.bias"] = model.ln_final.bias
    sd["text_projection.weight"] = model.text_projection.t()
    sd["vision_model.embeddings.patch_embedding.weight"] = torch.zeros(4, 3, 2, 2)
    sd["logit_scale"] = model.logit_scale
    return {k: v.detach().clone().contiguous() for k, v in sd.items()}


def hf_forward(sd: dict, ids: torch.Tensor, heads: int) -> torch.Tensor:
    """Hugging Face CLIPTextModel's arithmetic: q scaled before q·k, separate projections."""
    p = "text_model."
    x = sd[p + "embeddings.token_embedding.weight"][ids] + sd[p + "embeddings.position_embedding.weight"][None]
    b, n, w = x.shape
    mask = torch.full((n, n), float("-inf")).triu(1)
    for i in range(LAYERS):
        q = f"{p}encoder.layers.{i}."
        lin = lambda t, name: F.linear(t, sd[f"{q}{name}.weight"], sd[f"{q}{name}.bias"])  # noqa: E731
        h = F.layer_norm(x, (w,), sd[q + "layer_norm1.weight"], sd[q + "layer_norm1.bias"])
        split = lambda t: t.view(b, n, heads, -1).transpose(1, 2)  # noqa: E731
        qq = split(lin(h, "self_attn.q_proj") * (w // heads) ** -0.5)
        kk, vv = split(lin(h, "self_attn.k_proj")), split(lin(h, "self_attn.v_proj"))
        att = (qq @ kk.transpose(-1, -2) + mask).softmax(-1)
        x = x + lin((att @ vv).transpose(1, 2).reshape(b, n, w), "self_attn.out_proj")
        h = F.layer_norm(x, (w,), sd[q + "layer_norm2.weight"], sd[q + "layer_norm2.bias"])
        h = lin(h, "mlp.fc1")
        x = x + lin(h * torch.sigmoid(1.702 * h), "mlp.fc2")
    x = F.layer_norm(x, (w,), sd[p + "final_layer_norm.weight"], sd[p + "final_layer_norm.bias"])
    return F.normalize(x[torch.arange(b), ids.argmax(-1)] @ sd["text_projection.weight"].t(), dim=-1)


def test_huggingface_safetensors_directory(tmp_path, tok):
    torch.manual_seed(1)
    sd = to_hf(OpenAIClip(tok.vocab_size))
    d = tmp_path / "clip-vit-base-patch32"
    d.mkdir()
    convert_clip.write_safetensors(str(d / "model.safetensors"), sd, {"format": "pt"})
    with open(d / "config.json", "w") as f:
        json.dump({"architectures": ["CLIPModel"], "text_config": {"hidden_act": "quick_gelu", "num_attention_heads": 1,
                                                                    "layer_norm_eps": 1e-5}}, f)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(os.path.join(clip_tokenizer.data_dir(), name), d / name)
    out = tmp_path / "out"
    summary = convert_clip.convert(str(d), str(out))
    assert summary["layout"] == "huggingface" and summary["text_encoder"]["embed_dim"] == EMBED
    tower, _ = convert_clip.load_tower(str(d))
    ids = prompts(tok)
    with torch.no_grad():
        assert torch.allclose(tower.encode_text(ids), hf_forward(sd, ids, 1), atol=1e-5)
    assert (out / "text_encoder.onnx").exists()


def test_clip_gzip_tokenizer_is_laid_out_as_clip_does(tmp_path, tok):
    with open(os.path.join(clip_tokenizer.data_dir(), "merges.txt"), encoding="utf-8") as f:
        merges = f.read().split("\n", 1)[1]
    gz = tmp_path / "bpe_simple_vocab_16e6.txt.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as f:
        f.write('"bpe_simple_vocab_16e6.txt#version: 0.2\n' + merges)
    got = convert_clip.write_tokenizer(str(gz), str(tmp_path / "tok"))
    assert got.encoder == tok.encoder and got.merges == tok.merges


def test_safetensors_round_trip_and_refusals(tmp_path):
    t = {"a": torch.randn(3, 5), "b": torch.randn(7).half(), "c": torch.arange(4), "e": torch.zeros(0)}
    path = str(tmp_path / "x.safetensors")
    convert_clip.write_safetensors(path, t)
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
    assert n % 8 == 0
    back = convert_clip.read_safetensors(path)
    assert set(back) == set(t) and all(torch.equal(back[k], t[k]) for k in t)
    with open(path, "r+b") as f:
        f.write((1 << 40).to_bytes(8, "little"))
    with pytest.raises(ValueError, match="header of"):
        convert_clip.read_safetensors(path)


def test_mismatched_tokenizer_is_refused(tmp_path, tok):
    torch.manual_seed(0)
    model = OpenAIClip(tok.vocab_size + 1).eval()
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    with pytest.raises(ValueError, match="4096 tokens, the embedding 4097 rows"):
        convert_clip.convert(str(tmp_path / "sd.pt"), str(tmp_path / "out"), clip_tokenizer.data_dir())
