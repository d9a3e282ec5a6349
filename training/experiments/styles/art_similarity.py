"""How far Fluent 3D is from the seen styles, in pixels and in the teacher's eyes (issue 29).

For every category drawn in Fluent 3D, Noto and Twemoji (696), each tile is
resized to 32 px and laid on white. Printed:

- pixel nearest neighbour: the Fluent 3D tile's closest Noto or Twemoji tile
  (cosine of the centred pixels, at 32 px and averaged down to 8 px) is of
  its own category, among the 696; Noto to Twemoji for scale;
- for each mini-CLIP given: its zero-shot top-1 over all 703 names on the
  Fluent 3D, Noto and Twemoji tiles, and the same nearest neighbour in its
  image embedding space; and its Fluent 3D top-1 by how many of the eight
  teacher styles (`--styles teacher`) draw the category: a teacher taught
  more drawings of a name should name those categories' Fluent 3D tiles
  better than the others.

    cd training
    python3 experiments/styles/art_similarity.py checkpoints/miniclip.pt runs/miniclip-teacher/miniclip.pt \
        runs/miniclip-mix/miniclip.pt runs/miniclip-coarse/miniclip.pt
"""
from __future__ import annotations

import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from vildtrain.data.art import STYLES_TEACHER, ArtLibrary  # noqa: E402
from vildtrain.data.categories import load_categories  # noqa: E402
from vildtrain.models.miniclip import load_miniclip  # noqa: E402


def tile(lib: ArtLibrary, cid: int, style: str, size: int = 32) -> torch.Tensor:
    a = np.asarray(lib.image(cid, style).convert("RGBA").resize((size, size), 2), np.float32) / 255
    return torch.from_numpy(a[..., :3] * a[..., 3:] + (1 - a[..., 3:])).permute(2, 0, 1)


def nearest_is_own(q: torch.Tensor, refs: list[torch.Tensor]) -> float:
    """Share of rows of q whose most similar row over refs (cosine) has the same index."""
    q = F.normalize(q.flatten(1), dim=1)
    sim = torch.stack([F.normalize(r.flatten(1), dim=1) @ q.T for r in refs]).max(0).values
    return (sim.argmax(0) == torch.arange(len(q))).float().mean().item()


def main(paths: list[str]) -> int:
    torch.set_num_threads(1)
    cats = load_categories()
    lib = ArtLibrary(styles=("fluent3d",) + STYLES_TEACHER)
    ids = [c.id for c in cats if all(lib.has(c.id, s) for s in ("fluent3d", "noto", "twemoji"))]
    fl, no, tw = (torch.stack([tile(lib, i, s) for i in ids]) for s in ("fluent3d", "noto", "twemoji"))
    print(f"{len(ids)} categories in all three styles")
    for name, f in (("32 px", lambda x: x - 0.5), ("8 px", lambda x: F.avg_pool2d(x, 4) - 0.5)):
        print(f"pixel nearest neighbour at {name}: Fluent 3D -> seen {nearest_is_own(f(fl), [f(no), f(tw)]):.3f}, "
              f"Noto -> Twemoji {nearest_is_own(f(no), [f(tw)]):.3f}")
    col = torch.tensor([[c.id for c in cats].index(i) for i in ids])
    drawings = torch.tensor([sum(lib.has(i, s) for s in STYLES_TEACHER) for i in ids])
    groups = [(2, 4), (5, 6), (7, 8)]
    print("categories drawn in 2-4 / 5-6 / 7-8 teacher styles: " +
          " / ".join(str(int(((drawings >= a) & (drawings <= b)).sum())) for a, b in groups))
    for path in paths:
        m = load_miniclip(path).eval()
        with torch.no_grad():
            ef, en, et = m.encode_image(fl), m.encode_image(no), m.encode_image(tw)
            text = m.text_embeddings([c.name for c in cats])
        top1 = [((e @ text.T).argmax(1) == col).float().mean().item() for e in (ef, en, et)]
        print(f"{path}: zero-shot top-1 Fluent 3D {top1[0]:.3f}, Noto {top1[1]:.3f}, Twemoji {top1[2]:.3f}; "
              f"image nearest neighbour Fluent 3D -> seen {nearest_is_own(ef, [en, et]):.3f}, "
              f"Noto -> Twemoji {nearest_is_own(en, [et]):.3f}")
        right = ((ef @ text.T).argmax(1) == col).float()
        print("  Fluent 3D top-1 by teacher styles drawing the category, 2-4 / 5-6 / 7-8: " +
              " / ".join(f"{right[(drawings >= a) & (drawings <= b)].mean().item():.3f}" for a, b in groups))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["checkpoints/miniclip.pt"]))
