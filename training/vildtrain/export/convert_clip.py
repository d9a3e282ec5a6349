"""Convert a CLIP checkpoint's text tower and tokenizer into a bundle's
``text_encoder.onnx`` and ``tokenizer/`` (docs/bundle.md, docs/reference.md).

    python3 -m vildtrain convert_clip --checkpoint ViT-B-32.pt --tokenizer bpe_simple_vocab_16e6.txt.gz --out DIR
    python3 -m vildtrain convert_clip --checkpoint clip-vit-base-patch32/ --out DIR

Checkpoints it reads:

* OpenAI CLIP's TorchScript archive (``ViT-B-32.pt`` as ``clip.load`` downloads
  it) or a plain ``state_dict`` with OpenAI's keys (``token_embedding.weight``,
  ``positional_embedding``, ``transformer.resblocks.N.*``, ``ln_final.*``,
  ``text_projection``); the sizes come from the shapes, the heads from CLIP's
  rule width / 64; QuickGELU.
* Hugging Face CLIP: a directory with ``model.safetensors`` and ``config.json``
  (``CLIPModel`` or ``CLIPTextModelWithProjection``: ``text_model.*`` and
  ``text_projection.weight``), or the ``.safetensors`` file alone (then the
  heads are width / 64 and the activation QuickGELU, as in OpenAI's models).
  The tokenizer is the directory's ``vocab.json`` + ``merges.txt`` unless
  ``--tokenizer`` names another.

``--tokenizer`` is a directory (``vocab.json`` + ``merges.txt``, or CLIP's
``bpe_simple_vocab_16e6.txt.gz``) or the ``.gz`` file itself; it is written to
``DIR/tokenizer`` as ``vocab.json`` + ``merges.txt`` (a ``.gz`` is laid out as
CLIP lays it out). The vocabulary must have as many tokens as the embedding has
rows, and the end token must be the largest id (the graph pools at ArgMax).

The tower becomes :class:`~vildtrain.models.reference.ClipTextTower`
(OpenAI's layout) and is exported with float32 weights, opset 17, dynamic
batch (tests/test_convert_clip.py checks both layouts against their own
arithmetic: OpenAI's modules, and Hugging Face's separate q/k/v attention). The rest of a
bundle (detector graphs, manifest) comes from the ViLD detector's export.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import struct
import sys

import torch
from torch import Tensor

from vildtrain.export.export import TextEncoderGraph, export_graph
from vildtrain.models.reference import ClipTextTower
from vildtrain.text import clip_tokenizer

CLIP_GZ = "bpe_simple_vocab_16e6.txt.gz"
MAX_HEADER = 100 << 20   # a safetensors header larger than this is refused

_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
           "I64": torch.int64, "I32": torch.int32, "U8": torch.uint8, "BOOL": torch.bool}


# ---------------------------------------------------------------- safetensors

def read_safetensors(path: str) -> dict[str, Tensor]:
    """Every tensor of a ``.safetensors`` file (8-byte little-endian header size,
    JSON header of dtype, shape and data_offsets, then the data)."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"convert_clip: {path}: not a safetensors file (shorter than 8 bytes)")
        (n,) = struct.unpack("<Q", raw)
        if n > MAX_HEADER:
            raise ValueError(f"convert_clip: {path}: safetensors header of {n} bytes, more than {MAX_HEADER}")
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in _DTYPES:
            raise ValueError(f"convert_clip: {path}: tensor {name} has dtype {info['dtype']}")
        begin, end = info["data_offsets"]
        if not 0 <= begin <= end <= len(data):
            raise ValueError(f"convert_clip: {path}: tensor {name} lies outside the file")
        t = torch.frombuffer(bytearray(data[begin:end]), dtype=_DTYPES[info["dtype"]]) if end > begin else \
            torch.empty(0, dtype=_DTYPES[info["dtype"]])
        out[name] = t.reshape(info["shape"])
    return out


def write_safetensors(path: str, tensors: dict[str, Tensor], metadata: dict[str, str] | None = None) -> None:
    """The inverse of :func:`read_safetensors` (tensors in name order, as the reference library writes)."""
    names = {v: k for k, v in _DTYPES.items()}
    header: dict = {"__metadata__": metadata} if metadata else {}
    blobs, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        b = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": names[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head + b"".join(blobs))


# ---------------------------------------------------------------- checkpoint layouts

def openai_text_tower(sd: dict[str, Tensor]) -> ClipTextTower:
    """The text tower of an OpenAI CLIP state_dict (visual.* and logit_scale ignored)."""
    need = ("token_embedding.weight", "positional_embedding", "ln_final.weight", "text_projection")
    missing = [k for k in need if k not in sd]
    if missing:
        raise ValueError(f"convert_clip: not an OpenAI CLIP state_dict: no {missing[0]}")
    vocab, width = sd["token_embedding.weight"].shape
    layers = len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks.")})
    tower = ClipTextTower(vocab_size=vocab, context_length=sd["positional_embedding"].shape[0], width=width,
                          layers=layers, heads=width // 64, embed_dim=sd["text_projection"].shape[1])
    state = {k: v.float() for k, v in sd.items() if k in tower.state_dict()}
    tower.load_state_dict(state, strict=True)
    return tower.eval()


_HF_LAYER = {"self_attn.out_proj": "attn.out_proj", "layer_norm1": "ln_1", "layer_norm2": "ln_2",
             "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}


def hf_text_tower(sd: dict[str, Tensor], config: dict | None = None) -> ClipTextTower:
    """The text tower of a Hugging Face CLIPModel / CLIPTextModelWithProjection
    state_dict, mapped onto OpenAI's layout (q, k, v stacked into in_proj; the
    projection Linear transposed). ``config`` is config.json (or its text_config)."""
    p = "text_model."
    if p + "embeddings.token_embedding.weight" not in sd or "text_projection.weight" not in sd:
        raise ValueError("convert_clip: not a Hugging Face CLIP text tower with projection: no "
                         "text_model.embeddings.token_embedding.weight or text_projection.weight")
    cfg = dict(config or {})
    cfg = cfg.get("text_config", cfg) if isinstance(cfg.get("text_config"), dict) else cfg
    vocab, width = sd[p + "embeddings.token_embedding.weight"].shape
    layers = len({k.split(".")[3] for k in sd if k.startswith(p + "encoder.layers.")})
    heads = int(cfg.get("num_attention_heads", width // 64))
    act = cfg.get("hidden_act", "quick_gelu")
    if float(cfg.get("layer_norm_eps", 1e-5)) != 1e-5:
        raise ValueError(f"convert_clip: layer_norm_eps {cfg['layer_norm_eps']}, the tower uses 1e-5")
    tower = ClipTextTower(vocab_size=vocab, context_length=sd[p + "embeddings.position_embedding.weight"].shape[0],
                          width=width, layers=layers, heads=heads, embed_dim=sd["text_projection.weight"].shape[0],
                          activation=act)
    state = {"token_embedding.weight": sd[p + "embeddings.token_embedding.weight"],
             "positional_embedding": sd[p + "embeddings.position_embedding.weight"],
             "ln_final.weight": sd[p + "final_layer_norm.weight"], "ln_final.bias": sd[p + "final_layer_norm.bias"],
             "text_projection": sd["text_projection.weight"].t()}
    for i in range(layers):
        src, dst = f"{p}encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for part in ("weight", "bias"):
            state[dst + "attn.in_proj_" + part] = torch.cat([sd[f"{src}self_attn.{q}_proj.{part}"]
                                                             for q in ("q", "k", "v")])
            for a, b in _HF_LAYER.items():
                state[f"{dst}{b}.{part}"] = sd[f"{src}{a}.{part}"]
    tower.load_state_dict({k: v.float().contiguous() for k, v in state.items()}, strict=True)
    return tower.eval()


def load_tower(checkpoint: str) -> tuple[ClipTextTower, str]:
    """(tower, layout) from an OpenAI archive or state_dict, or a Hugging Face safetensors file/directory."""
    if os.path.isdir(checkpoint):
        st = os.path.join(checkpoint, "model.safetensors")
        if not os.path.exists(st):
            raise FileNotFoundError(f"convert_clip: {checkpoint} has no model.safetensors")
        config = None
        if os.path.exists(os.path.join(checkpoint, "config.json")):
            with open(os.path.join(checkpoint, "config.json"), encoding="utf-8") as f:
                config = json.load(f)
        return hf_text_tower(read_safetensors(st), config), "huggingface"
    if checkpoint.endswith(".safetensors"):
        return hf_text_tower(read_safetensors(checkpoint)), "huggingface"
    try:
        sd = torch.jit.load(checkpoint, map_location="cpu").state_dict()
        layout = "openai-torchscript"
    except RuntimeError:
        sd = torch.load(checkpoint, map_location="cpu")
        sd = sd.get("state_dict", sd) if isinstance(sd, dict) else sd
        layout = "openai-state-dict"
    return openai_text_tower(sd), layout


# ---------------------------------------------------------------- tokenizer

def write_tokenizer(source: str, out: str) -> clip_tokenizer.Tokenizer:
    """Copy (or, from CLIP's .gz, lay out) the tokenizer as out/vocab.json + out/merges.txt."""
    os.makedirs(out, exist_ok=True)
    if os.path.isdir(source) and os.path.exists(os.path.join(source, "vocab.json")):
        for name in ("vocab.json", "merges.txt"):
            shutil.copy(os.path.join(source, name), os.path.join(out, name))
        return clip_tokenizer.load(out)
    gz = os.path.join(source, CLIP_GZ) if os.path.isdir(source) else source
    if not os.path.exists(gz) or not gz.endswith(".gz"):
        raise FileNotFoundError(f"convert_clip: no vocab.json + merges.txt or bpe_simple_vocab_16e6.txt.gz at {source}")
    with gzip.open(gz, "rt", encoding="utf-8") as f:
        merges = clip_tokenizer.read_merges(f, limit=clip_tokenizer.CLIP_MERGES, skip_first=True)
    vocab = clip_tokenizer.layout_vocab(merges)
    with open(os.path.join(out, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(out, "merges.txt"), "w", encoding="utf-8", newline="\n") as f:
        f.write("#version: 0.2\n")
        f.writelines(f"{a} {b}\n" for a, b in merges)
    return clip_tokenizer.load(out)


def check_tokenizer(tower: ClipTextTower, tok: clip_tokenizer.Tokenizer) -> None:
    """The tokenizer fits the tower: one token per embedding row, the end token the largest id."""
    if tok.vocab_size != tower.cfg["vocab_size"]:
        raise ValueError(f"convert_clip: the tokenizer has {tok.vocab_size} tokens, the embedding "
                         f"{tower.cfg['vocab_size']} rows")
    if tok.eot_id != tok.vocab_size - 1:
        raise ValueError(f"convert_clip: the end token is id {tok.eot_id}, not the largest "
                         f"({tok.vocab_size - 1}): pooling at ArgMax would miss it")


# ---------------------------------------------------------------- convert

def convert(checkpoint: str, out: str, tokenizer: str | None = None) -> dict:
    """Write out/text_encoder.onnx and out/tokenizer/; returns a summary."""
    tower, layout = load_tower(checkpoint)
    if tokenizer is None:
        if layout != "huggingface" or not os.path.isdir(checkpoint):
            raise ValueError("convert_clip: --tokenizer is needed (vocab.json + merges.txt, or bpe_simple_vocab_16e6.txt.gz)")
        tokenizer = checkpoint
    tok = write_tokenizer(tokenizer, os.path.join(out, "tokenizer"))
    check_tokenizer(tower, tok)
    ids = torch.from_numpy(tok.encode_batch(["a photo of a dog.", "a teapot"], tower.context_length))
    export_graph(TextEncoderGraph(tower).eval(), (ids,), os.path.join(out, "text_encoder.onnx"), ["input_ids"],
                 ["text_embeddings"], {"input_ids": {0: "B"}, "text_embeddings": {0: "B"}})
    with torch.no_grad():
        emb = tower.encode_text(ids)
    return {"layout": layout, "text_encoder": dict(tower.cfg), "tokenizer_tokens": tok.vocab_size,
            "probe_cosine": float(emb[0] @ emb[1])}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="vildtrain convert_clip", description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True,
                    help="OpenAI TorchScript archive or state_dict, or Hugging Face model.safetensors (file or directory)")
    ap.add_argument("--tokenizer", default=None,
                    help="directory with vocab.json + merges.txt, or bpe_simple_vocab_16e6.txt.gz "
                         "(default: the Hugging Face directory itself)")
    ap.add_argument("--out", required=True, help="directory to write text_encoder.onnx and tokenizer/ into")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    summary = convert(args.checkpoint, args.out, args.tokenizer)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
