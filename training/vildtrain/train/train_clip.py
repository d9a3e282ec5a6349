"""Train the mini-CLIP contrastively on synthetic crops of ALL categories.

    cd training && python3 -m vildtrain train_clip --out runs/miniclip    # full run (training/README.md)
    cd training && python3 -m vildtrain train_clip --steps 20 --batch 32 --out /tmp/clip-smoke   # smoke run

Each step draws ``batch`` distinct categories, one crop and one caption each
(a prompt template filled with the name or, sometimes, a synonym unique to that
category), and minimises CLIP's symmetric InfoNCE with a learned temperature,
plus an auxiliary loss classifying both the images and the captions against
learned per-category prototypes (trainer-only; it makes both towers learn from
the first step instead of after a long plateau). ``--procs`` data-parallel
processes split each batch; gradients and BatchNorm statistics are averaged.
Progress (step, loss, rate, ETA) goes to stderr and ``OUT/log.jsonl``; state
is checkpointed to ``OUT/state.pt`` and a rerun resumes from it. Every step's
randomness is derived from (seed, step), so a resumed run draws the same data.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from vildtrain.paths import REPO_DIR
from vildtrain.models.miniclip import DEFAULT_CHECKPOINT, MiniClip, MiniClipConfig, load_miniclip, save_miniclip
from vildtrain.text.prompts import TEMPLATES
from vildtrain.train import clipdata

EVAL_SEED = 20261125
SYNONYM_P = 0.25
PROTOTYPE_SCALE = 30.0


def caption_table(categories, tokenizer, context_length: int) -> tuple[torch.Tensor, list[list[int]], list[list[int]]]:
    """Token ids of every caption, and per category the rows built from its name
    and the rows built from its synonyms (only synonyms no other category uses)."""
    names = {c.name for c in categories}
    counts = Counter(s for c in categories for s in set(c.synonyms))
    texts: list[str] = []
    by_name: list[list[int]] = []
    by_synonym: list[list[int]] = []
    for c in categories:
        rows = []
        for t in TEMPLATES:
            rows.append(len(texts))
            texts.append(t.format(c.name))
        by_name.append(rows)
        rows = []
        for s in c.synonyms:
            if counts[s] == 1 and s not in names and len(s) <= 40:
                for t in TEMPLATES:
                    rows.append(len(texts))
                    texts.append(t.format(s))
        by_synonym.append(rows)
    ids = torch.from_numpy(tokenizer.encode_batch(texts, context_length))
    return ids, by_name, by_synonym


def trim(ids: torch.Tensor) -> torch.Tensor:
    """Drop padding columns beyond the longest sequence (causal attention makes
    the pooled output independent of them)."""
    longest = int((ids != 0).sum(dim=1).max())
    return ids[:, :max(2, longest)]


@torch.no_grad()
def zero_shot(model: MiniClip, bank: clipdata.ArtBank, backgrounds: torch.Tensor, text: torch.Tensor,
              crops_per_tile: int, seed: int, size: int, batch: int = 512) -> float:
    """Top-1 accuracy of crops of every art tile against all category embeddings."""
    model.eval()
    g = torch.Generator().manual_seed(seed)
    indices = torch.arange(len(bank)).repeat(crops_per_tile)
    correct = 0
    for start in range(0, len(indices), batch):
        idx = indices[start:start + batch]
        crops = clipdata.synthesize(bank, idx, backgrounds, g, clipdata.CropConfig(size=size))
        pred = (model.encode_image(crops) @ text.T).argmax(dim=1)
        correct += int((pred == bank.labels[idx]).sum())
    model.train()
    return correct / len(indices)


@torch.no_grad()
def in_context(model: MiniClip, art, categories, text: torch.Tensor, scenes: int, size: int,
               seed: int = clipdata.SCENE_EVAL_SEED) -> dict[str, float]:
    """Top-1 over all categories of the objects of ``scenes`` held-out scenes of the
    training styles, each cropped square at 1x and 1.5x and the two embeddings
    averaged: the teacher's accuracy on the detector's ground-truth boxes."""
    from vildtrain.data.art import STYLES_TRAIN
    was_training = model.training
    model.eval()
    emb = None
    for scale in (1.0, 1.5):
        bank = clipdata.build_scene_bank(art, categories, STYLES_TRAIN, scenes, seed, size=size, jitter=0.0,
                                         scales=(scale, scale))
        e = torch.cat([model.encode_image(bank.images(torch.arange(i, min(i + 512, len(bank)))))
                       for i in range(0, len(bank), 512)])
        emb = e if emb is None else emb + e
    model.train(was_training)
    hit = (emb @ text.T).argmax(dim=1) == bank.labels
    novel = torch.tensor([categories[i].split == "novel" for i in bank.labels.tolist()])
    out = {"all": float(hit.float().mean()), "crops": len(bank), "scenes": scenes}
    for split, mask in (("base", ~novel), ("novel", novel)):
        out[split] = float(hit[mask].float().mean()) if bool(mask.any()) else None
    return out


@torch.no_grad()
def fixed_batch_loss(model: MiniClip, bank: clipdata.ArtBank, backgrounds: torch.Tensor, ids: torch.Tensor,
                     by_name: list[list[int]], size: int, count: int) -> float:
    """Contrastive loss on a fixed, seeded batch: the first ``count`` categories,
    their first art tile and their first name caption."""
    was_training = model.training
    model.eval()
    g = torch.Generator().manual_seed(EVAL_SEED)
    by_label = bank.by_label()
    classes = sorted(by_label)[:count]
    crops = clipdata.synthesize(bank, torch.tensor([by_label[c][0] for c in classes]), backgrounds, g,
                                clipdata.CropConfig(size=size))
    text = model.encode_text(trim(ids[torch.tensor([by_name[c][0] for c in classes])]))
    logits = model.logit_scale.exp().clamp(max=100) * model.encode_image(crops) @ text.T
    target = torch.arange(len(classes))
    loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    model.train(was_training)
    return float(loss)


def lr_at(step: int, steps: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * progress))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or "position" in name or "token" in name or "logit_scale" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m vildtrain train_clip", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="training/runs/miniclip", help="run directory (state, log)")
    ap.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, help="where the final model is saved")
    ap.add_argument("--steps", type=int, default=3700)
    ap.add_argument("--batch", type=int, default=192)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--widths", default="32,64,128,256")
    ap.add_argument("--embed-dim", type=int, default=256)
    ap.add_argument("--context-length", type=int, default=24)
    ap.add_argument("--text-width", type=int, default=128)
    ap.add_argument("--text-layers", type=int, default=2)
    ap.add_argument("--backgrounds", type=int, default=1024)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--eval-crops", type=int, default=2, help="held-out crops per art tile")
    ap.add_argument("--save-every", type=int, default=100)
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--stop-after", type=int, default=0, help="exit after this step (resume later)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--prototype-weight", type=float, default=1.0,
                    help="weight of the auxiliary losses tying images and captions to per-category prototypes")
    ap.add_argument("--max-categories", type=int, default=0, help="use only the first N categories (smoke tests)")
    ap.add_argument("--scene-crops", type=float, default=0.5,
                    help="share of a batch's crops cut from generated scenes around their objects (the "
                         "teacher's view of a proposal: neighbours, scene background and effects) instead of "
                         "synthesised; 0 = none")
    ap.add_argument("--scene-bank", type=int, default=8000,
                    help="scenes generated for --scene-crops (about 6.5 objects each, ~30 ms a scene)")
    ap.add_argument("--in-context-scenes", type=int, default=300,
                    help="held-out scenes for the final in-context top-1 (crops at 1x and 1.5x averaged, as "
                         "the detector's teacher targets are made); 0 = skip")
    ap.add_argument("--styles", default="train",
                    help="art the image tower learns from: 'train' (Noto and Twemoji, the detector's styles; the "
                         "committed checkpoint's), 'teacher' (every style but Fluent 3D: also OpenMoji and the "
                         "Iconify sets) or a comma-separated list (a style named twice is drawn twice as often)")
    ap.add_argument("--init", default="",
                    help="start from this saved mini-CLIP's weights (e.g. to teach a trained one more art) "
                         "instead of random ones; its configuration must match")
    ap.add_argument("--freeze-text", action="store_true",
                    help="keep the text tower (and so every category embedding) fixed: with --init, a detector "
                         "trained against the old text embeddings stays valid for the new image tower")
    ap.add_argument("--shade", type=float, default=0.0,
                    help="share of art tiles added again with pseudo-3D lighting (scenes.shade_sprite) and of "
                         "scene-bank objects drawn with it: rendered-looking art without showing a 3D style; "
                         "0 = none")
    ap.add_argument("--mixstyle", type=float, default=0.0,
                    help="probability per batch of mixing the image tower's feature statistics between crops "
                         "after its stem and first stage (MixStyle, a domain-generalisation regulariser); 0 = off")
    ap.add_argument("--coarse", type=float, default=0.0,
                    help="share of crops shrunk to 6-16 px and enlarged back (clipdata.coarsen): only coarse "
                         "shape and colour left; 0 = none")
    ap.add_argument("--randconv", type=float, default=0.0,
                    help="share of crops filtered by a random convolution blended with the crop "
                         "(clipdata.randconv): texture and colour randomised, shapes kept; 0 = none")
    ap.add_argument("--jitter", type=float, default=clipdata.CropConfig.jitter,
                    help="brightness, contrast and saturation jitter amplitude of synthesised crops")
    ap.add_argument("--procs", type=int, default=2,
                    help="data-parallel processes (gradients averaged every step); each uses --threads threads")
    args = ap.parse_args(argv)
    try:
        from vildtrain.data.art import training_styles
        args.style_list = training_styles(args.styles)
    except ValueError as e:
        print(f"train_clip: --styles {args.styles}: {e}", file=sys.stderr)
        return 2
    if args.freeze_text and not args.init:
        print("train_clip: --freeze-text needs --init (a random text tower would stay random)", file=sys.stderr)
        return 2
    if args.init and not os.path.exists(args.init):
        print(f"train_clip: --init {args.init}: no such file", file=sys.stderr)
        return 2
    if not all(0.0 <= v <= 1.0 for v in (args.mixstyle, args.coarse, args.randconv)) or not 0.0 <= args.jitter < 1.0:
        print(f"train_clip: --mixstyle {args.mixstyle} / --coarse {args.coarse} / --randconv {args.randconv} / "
              f"--jitter {args.jitter}: need "
              f"0 <= share <= 1 and 0 <= jitter < 1", file=sys.stderr)
        return 2
    if not 0.0 <= args.scene_crops <= 1.0:
        print(f"train_clip: --scene-crops {args.scene_crops}: need 0 <= share <= 1", file=sys.stderr)
        return 2
    if args.procs < 1 or args.batch % args.procs:
        print(f"train_clip: --batch {args.batch} must be a positive multiple of --procs {args.procs}", file=sys.stderr)
        return 2
    if args.procs == 1:
        return _run(0, 1, 0, args, argv)
    import socket

    import torch.multiprocessing as mp
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    context = mp.spawn(_spawned, args=(args.procs, port, args, argv), nprocs=args.procs, join=True)
    del context
    return 0


def _spawned(rank: int, world: int, port: int, args: argparse.Namespace, argv: list[str]) -> None:
    import torch.distributed as dist

    from vildtrain.train.workers import end_with_launcher
    end_with_launcher()
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        code = _run(rank, world, port, args, argv)
        if code:
            raise SystemExit(code)
    finally:
        dist.destroy_process_group()


def _mean_(tensors: list[torch.Tensor], world: int) -> None:
    """Average tensors over the data-parallel processes, in place."""
    if world == 1 or not tensors:
        return
    import torch.distributed as dist
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for t in tensors:
        t.copy_(flat[offset:offset + t.numel()].view_as(t))
        offset += t.numel()


@dataclass
class _Data:
    """What the mini-CLIP learns from and is scored on."""
    categories: list
    tokenizer: object
    art: object  # ArtLibrary
    train_bank: clipdata.ArtBank
    by_label: dict[int, list[int]]  # the training bank's tiles of each category
    heldout_banks: dict[str, clipdata.ArtBank]
    backgrounds: torch.Tensor
    eval_backgrounds: torch.Tensor
    scene_bank: clipdata.SceneCropBank | None
    scene_by_label: dict[int, list[int]]
    seen_bank: clipdata.ArtBank  # the detector's styles (Noto, Twemoji): the zero-shot "seen" figure


def _load_data(args: argparse.Namespace, lead: bool, world: int, t_start: float) -> _Data:
    """The categories, the tokenizer, the art banks of the training and held-out
    styles, the backgrounds and (with ``--scene-crops``) the scene bank."""
    from vildtrain.data.art import STYLES_HELDOUT, STYLES_TRAIN, ArtLibrary
    from vildtrain.data.categories import load_categories
    from vildtrain.text import clip_tokenizer

    categories = load_categories()
    if args.max_categories:
        categories = categories[:args.max_categories]
    tokenizer = clip_tokenizer.load()
    art = ArtLibrary()
    styles = args.style_list
    train_bank = clipdata.build_art_bank(art, categories, styles, shade=args.shade, seed=args.seed)
    # zero-shot "seen" is always measured on the detector's styles, unshaded, whatever the image tower learns from
    seen_bank = train_bank if styles == STYLES_TRAIN and not args.shade else \
        clipdata.build_art_bank(art, categories, STYLES_TRAIN)
    heldout_banks = {}
    for style in STYLES_HELDOUT:
        try:
            heldout_banks[style] = clipdata.build_art_bank(art, categories, (style,))
        except ValueError:
            pass
    backgrounds = clipdata.build_backgrounds(args.backgrounds, seed=args.seed)
    eval_backgrounds = clipdata.build_backgrounds(256, seed=EVAL_SEED)
    by_label = train_bank.by_label()
    scene_bank, scene_by_label = None, {}
    if args.scene_crops > 0:
        # every process builds the same bank (seeded); side by side that costs one bank's time
        t_bank = time.time()
        scene_bank = clipdata.build_scene_bank(
            art, categories, styles, args.scene_bank, clipdata.SCENE_BANK_SEED + args.seed,
            size=args.image_size, shade_p=args.shade,
            progress=(lambda d, n: print(f"train_clip: scene bank {d}/{n} scenes", file=sys.stderr, flush=True))
            if lead else None)
        scene_by_label = scene_bank.by_label()
        if lead:
            print(f"train_clip: scene bank of {len(scene_bank)} crops of {len(scene_by_label)} categories "
                  f"from {args.scene_bank} scenes in {time.time() - t_bank:.0f}s", file=sys.stderr)
    if lead:
        print(f"train_clip: {len(categories)} categories, {len(train_bank)} training tiles "
              f"({', '.join(styles)}), "
              f"held-out tiles {({k: len(v) for k, v in heldout_banks.items()})}, {world} process(es), "
              f"setup {time.time() - t_start:.1f}s", file=sys.stderr)
    return _Data(categories, tokenizer, art, train_bank, by_label, heldout_banks, backgrounds, eval_backgrounds,
                 scene_bank, scene_by_label, seen_bank)


def _build(args: argparse.Namespace, data: _Data) -> tuple[MiniClipConfig, MiniClip, torch.nn.Parameter,
                                                             torch.optim.AdamW]:
    """The model, the trainer-only category prototypes and the optimizer of both."""
    cfg = MiniClipConfig(image_size=args.image_size, embed_dim=args.embed_dim,
                         widths=tuple(int(w) for w in args.widths.split(",")),
                         vocab_size=data.tokenizer.vocab_size, context_length=args.context_length,
                         text_width=args.text_width, text_layers=args.text_layers)
    model = MiniClip(cfg)
    if args.init:
        start = load_miniclip(args.init)
        if asdict(start.cfg) != asdict(cfg):
            raise SystemExit(f"train_clip: --init {args.init} has another configuration: {asdict(start.cfg)}")
        model.load_state_dict(start.state_dict())
    if args.freeze_text:
        for p in model.text.parameters():
            p.requires_grad_(False)
    # channels-last convolutions are ~5% faster here (oneDNN); the weights are the same
    model.image.to(memory_format=torch.channels_last)
    # Per-category prototypes (trainer-only, discarded after training): images and
    # captions are both classified against them, which gives both towers a strong
    # signal from the first step; the CLIP loss aligns the towers directly.
    prototypes = torch.nn.Parameter(torch.randn(len(data.categories), cfg.embed_dim) * 0.02)
    groups = param_groups(model, args.weight_decay) + [{"params": [prototypes], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.98), eps=1e-6)
    return cfg, model, prototypes, opt


def _resume(state_path: str, args: argparse.Namespace, cfg: MiniClipConfig, model: MiniClip,
            prototypes: torch.nn.Parameter, opt, lead: bool) -> int | None:
    """The step to continue from (0 for a new run); None if OUT/state.pt is from
    another configuration."""
    if not os.path.exists(state_path):
        return 0
    state = torch.load(state_path, map_location="cpu")
    same = all(state["args"].get(k, d) == getattr(args, k)
               for k, d in (("steps", None), ("styles", "train"), ("init", ""), ("freeze_text", False)))
    if state["config"] != asdict(cfg) or not same:
        print(f"train_clip: {state_path} is from a different configuration; "
              f"delete it or use another --out", file=sys.stderr)
        return None
    model.load_state_dict(state["model"])
    prototypes.data.copy_(state["prototypes"])
    opt.load_state_dict(state["optimizer"])
    if lead:
        print(f"train_clip: resuming at step {state['step']}", file=sys.stderr)
    return state["step"]


def _draw_batch(args: argparse.Namespace, step: int, rank: int, world: int, batch: int, data: _Data,
                captions: tuple[torch.Tensor, list[list[int]], list[list[int]]], crop_cfg: clipdata.CropConfig
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """This process's share of step ``step``'s batch: (category labels, crops,
    caption token ids). The categories, tiles and captions of the whole batch come
    from (seed, step), the pixels from (seed, step, process)."""
    ids, by_name, by_synonym = captions
    g = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
    classes = torch.randperm(len(data.categories), generator=g)[:batch]
    tiles, rows = [], []
    for c in classes.tolist():
        options = data.by_label[c]
        tiles.append(options[int(torch.randint(0, len(options), (1,), generator=g))])
        pool = by_synonym[c] if by_synonym[c] and float(torch.rand(1, generator=g)) < SYNONYM_P else by_name[c]
        rows.append(pool[int(torch.randint(0, len(pool), (1,), generator=g))])
    # which categories show a scene crop instead (a generator of their own: a run
    # without scene crops draws exactly what it drew before they existed)
    scene_pick = [-1] * len(tiles)
    if data.scene_bank is not None:
        g_scene = torch.Generator().manual_seed(args.seed * 1_000_003 + step + 500_000_000)
        for k, c in enumerate(classes.tolist()):
            u, r = float(torch.rand(1, generator=g_scene)), float(torch.rand(1, generator=g_scene))
            if u < args.scene_crops and c in data.scene_by_label:
                options = data.scene_by_label[c]
                scene_pick[k] = options[min(int(r * len(options)), len(options) - 1)]
    # this process's share of the batch; its own generator for the pixels
    classes, tiles, rows = classes[rank::world], tiles[rank::world], rows[rank::world]
    scene_pick = torch.tensor(scene_pick[rank::world], dtype=torch.int64)
    g_local = torch.Generator().manual_seed((args.seed * 1_000_003 + step) * 64 + rank)
    from_scene = scene_pick >= 0
    crops = torch.empty(len(tiles), 3, crop_cfg.size, crop_cfg.size)
    if not bool(from_scene.all()):
        crops[~from_scene] = clipdata.synthesize(data.train_bank, torch.tensor(tiles)[~from_scene],
                                                 data.backgrounds, g_local, crop_cfg)
    if bool(from_scene.any()):
        cut = data.scene_bank.images(scene_pick[from_scene])
        flip = torch.rand(cut.shape[0], generator=g_local) < 0.5
        cut[flip] = cut[flip].flip(-1)
        crops[from_scene] = cut
    if args.coarse > 0:
        crops = clipdata.coarsen(crops, args.coarse, g_local)
    if args.randconv > 0:
        crops = clipdata.randconv(crops, args.randconv, g_local)
    crops = crops.contiguous(memory_format=torch.channels_last)
    return classes, crops, trim(ids[torch.tensor(rows)])


def _losses(model: MiniClip, prototypes: torch.nn.Parameter, crops: torch.Tensor, text_ids: torch.Tensor,
            classes: torch.Tensor, prototype_weight: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """CLIP's symmetric InfoNCE over the batch plus, with ``prototype_weight`` > 0,
    both towers classified against the prototypes. Returns (loss, the logits and
    scale the progress line reports)."""
    img = model.encode_image(crops)
    txt = model.encode_text(text_ids)
    scale = model.logit_scale.exp().clamp(max=100)
    logits = scale * img @ txt.T
    target = torch.arange(len(classes))
    loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    shown = {"scale": scale, "logits": logits, "target": target}
    if prototype_weight > 0:
        p = F.normalize(prototypes, dim=-1)
        shown["img_proto"] = PROTOTYPE_SCALE * img @ p.T
        shown["txt_proto"] = PROTOTYPE_SCALE * txt @ p.T
        loss = loss + prototype_weight * (F.cross_entropy(shown["img_proto"], classes) +
                                          F.cross_entropy(shown["txt_proto"], classes)) / 2
    return loss, shown


def _report(args: argparse.Namespace, step: int, batch: int, rate: float, elapsed: float, loss: torch.Tensor,
            shown: dict[str, torch.Tensor], classes: torch.Tensor, lr: float, log) -> None:
    """Print a progress line (and the prototype accuracies) and log it."""
    eta = (args.steps - step) / max(rate, 1e-9)
    acc = float((shown["logits"].argmax(1) == shown["target"]).float().mean())
    if args.prototype_weight > 0:
        print(f"  prototype acc: image {float((shown['img_proto'].argmax(1) == classes).float().mean()):.2f} "
              f"text {float((shown['txt_proto'].argmax(1) == classes).float().mean()):.2f}", file=sys.stderr)
    rec = {"step": step, "loss": round(float(loss), 4), "batch_acc": round(acc, 3),
           "scale": round(float(shown["scale"]), 2), "lr": lr,
           "steps_per_s": round(rate, 3), "images_per_s": round(rate * batch, 1),
           "eta_s": round(eta), "elapsed_s": round(elapsed)}
    print(f"step {step}/{args.steps} loss {rec['loss']:.3f} acc {acc:.2f} scale {rec['scale']} "
          f"{rec['images_per_s']} img/s ETA {eta / 60:.1f} min", file=sys.stderr, flush=True)
    log.write(json.dumps(rec) + "\n")
    log.flush()


def _final_metrics(args: argparse.Namespace, argv: list[str], model: MiniClip, data: _Data,
                   captions: tuple, cfg: MiniClipConfig, batch: int, world: int, fixed_start: float,
                   t_start: float) -> dict:
    """Zero-shot top-1 on every art bank, the fixed batch's loss before and after,
    the in-context top-1 and what reproduces the run."""
    ids, by_name, _ = captions
    categories = data.categories
    text = model.text_embeddings([c.name for c in categories], data.tokenizer)
    metrics = {"categories": len(categories), "steps": args.steps, "batch": batch,
               "zero_shot_top1": {"seen": zero_shot(model, data.seen_bank, data.eval_backgrounds, text,
                                                     args.eval_crops, EVAL_SEED, cfg.image_size)}}
    for style, bank in data.heldout_banks.items():
        metrics["zero_shot_top1"][style] = zero_shot(model, bank, data.eval_backgrounds, text, args.eval_crops,
                                                      EVAL_SEED, cfg.image_size)
    metrics["fixed_batch_loss"] = {"start": fixed_start, "end": fixed_batch_loss(
        model, data.train_bank, data.eval_backgrounds, ids, by_name, cfg.image_size,
        min(args.batch, len(categories)))}
    if args.in_context_scenes > 0:
        metrics["in_context_top1"] = in_context(model, data.art, categories, text, args.in_context_scenes,
                                                cfg.image_size)
    metrics["styles"] = list(args.style_list)
    if args.init:
        metrics["init"] = {"path": os.path.relpath(os.path.abspath(args.init), REPO_DIR), "freeze_text": args.freeze_text}
    metrics["scene_crops"] = {"share": args.scene_crops,
                              "bank_scenes": args.scene_bank if data.scene_bank else 0,
                              "bank_crops": len(data.scene_bank) if data.scene_bank else 0}
    metrics["train_seconds"] = round(time.time() - t_start)
    metrics["command"] = "python3 -m vildtrain train_clip " + " ".join(argv)
    metrics["processes"] = world
    return metrics


def _run(rank: int, world: int, port: int, args: argparse.Namespace, argv: list[str]) -> int:
    """One process's part of the run (all of it alone): set up, resume, loop, save."""
    lead = rank == 0
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    np.random.seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    t_start = time.time()
    data = _load_data(args, lead, world, t_start)
    cfg, model, prototypes, opt = _build(args, data)
    captions = caption_table(data.categories, data.tokenizer, cfg.context_length)
    state_path = os.path.join(args.out, "state.pt")
    step = _resume(state_path, args, cfg, model, prototypes, opt, lead)
    if step is None:
        return 2

    log = open(os.path.join(args.out, "log.jsonl"), "a") if lead else None
    fixed_start = fixed_batch_loss(model, data.train_bank, data.eval_backgrounds, captions[0], captions[1],
                                   cfg.image_size, min(args.batch, len(data.categories)))
    crop_cfg = clipdata.CropConfig(size=cfg.image_size, jitter=args.jitter)
    model.image.mixstyle.p = args.mixstyle
    batch = min(args.batch, len(data.categories))
    batch -= batch % world
    t_last, s_last = time.time(), step
    params = [p for group in opt.param_groups for p in group["params"]]
    model.train()
    while step < args.steps:
        classes, crops, text_ids = _draw_batch(args, step, rank, world, batch, data, captions, crop_cfg)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
        loss, shown = _losses(model, prototypes, crops, text_ids, classes, args.prototype_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        _mean_([p.grad for p in params if p.grad is not None], world)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        step += 1

        if step % args.save_every == 0 or step == args.steps or (step % args.eval_every == 0):
            # BatchNorm statistics are per process: average them before anything is saved or evaluated
            _mean_([b for b in model.buffers() if b.is_floating_point()], world)
        if not lead:
            if args.stop_after and step >= args.stop_after and step < args.steps:
                return 0
            continue

        if step % args.log_every == 0 or step == args.steps:
            now = time.time()
            _report(args, step, batch, (step - s_last) / max(1e-9, now - t_last), now - t_start, loss, shown,
                    classes, opt.param_groups[0]["lr"], log)
            t_last, s_last = now, step
        if step % args.save_every == 0 or step == args.steps:
            tmp = state_path + ".tmp"
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                        "prototypes": prototypes.detach(),
                        "config": asdict(cfg), "args": vars(args)}, tmp)
            os.replace(tmp, state_path)
        if args.stop_after and step >= args.stop_after and step < args.steps:
            print(f"train_clip: stopping at step {step} as asked; rerun to resume", file=sys.stderr)
            return 0
        if step % args.eval_every == 0 and step < args.steps:
            model.eval()
            text = model.text_embeddings([c.name for c in data.categories], data.tokenizer)
            acc = zero_shot(model, data.seen_bank, data.eval_backgrounds, text, 1, EVAL_SEED, cfg.image_size)
            print(f"step {step}: zero-shot top-1 (seen styles) {acc:.3f}", file=sys.stderr, flush=True)
            log.write(json.dumps({"step": step, "zero_shot_seen": acc}) + "\n")
            model.train()

    if not lead:
        return 0
    model.eval()
    metrics = _final_metrics(args, argv, model, data, captions, cfg, batch, world, fixed_start, t_start)
    print("train_clip: " + json.dumps(metrics), file=sys.stderr)
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    save_miniclip(model, args.checkpoint, extra={"metrics": metrics, "seed": args.seed})
    log.close()
    return 0
