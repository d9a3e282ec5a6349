"""Writes imageio/testdata: small images of every accepted format, JPEGs with
each EXIF orientation, hostile headers (a PNG claiming 100000x100000, a
1000-frame GIF), and preprocess_golden.json: docs/bundle.md's input rules
computed by PyTorch (F.interpolate bilinear, align_corners=False, on x/255,
then (x - mean) / std and zero padding) and the orientation PIL's
ImageOps.exif_transpose gives. Arrays are base64 of little-endian float32.

Run from the repository root:  /usr/bin/python3 imageio/testdata/gen_images.py
"""
import base64
import io
import json
import math
import os
import struct
import zlib

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

HERE = os.path.dirname(os.path.abspath(__file__))
rng = np.random.default_rng(0)
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def path(name):
    return os.path.join(HERE, name)


def b64(a):
    return base64.b64encode(np.ascontiguousarray(a, dtype="<f4").tobytes()).decode()


# Plain images of each format.
Image.fromarray(rng.integers(0, 256, size=(37, 53, 3), dtype=np.uint8), "RGB").save(path("rgb.png"))
Image.fromarray(rng.integers(0, 256, size=(41, 30, 4), dtype=np.uint8), "RGBA").save(path("rgba.png"))
Image.fromarray(rng.integers(0, 256, size=(15, 20), dtype=np.uint8), "L").save(path("gray.png"))
smooth = np.kron(rng.integers(0, 256, size=(6, 8, 3)), np.ones((8, 8, 1))).astype(np.uint8)
Image.fromarray(smooth, "RGB").save(path("photo.jpg"), quality=90)
Image.fromarray(rng.integers(0, 256, size=(20, 28, 3), dtype=np.uint8), "RGB").save(path("lossless.webp"), lossless=True)
frames = [Image.fromarray(np.full((12, 16, 3), v, np.uint8), "RGB").convert("P") for v in (40, 200)]
frames[0].save(path("two_frames.gif"), save_all=True, append_images=frames[1:], duration=50, loop=0)


# A PNG whose header claims 100000x100000 (and no pixel data).
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


with open(path("bomb.png"), "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0))
            + chunk(b"IEND", b""))

# A 1x1 GIF with 1000 frames.
gif = bytearray(b"GIF89a" + struct.pack("<HHBBB", 1, 1, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff")
for i in range(1000):
    gif += b"\x21\xf9\x04\x00\x01\x00\x00\x00"  # graphic control: 10 ms
    gif += b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0)  # image descriptor
    gif += b"\x02\x02\x44\x01\x00"  # LZW min code size 2, one sub-block: clear, pixel, end
gif += b"\x3b"
with open(path("frames1000.gif"), "wb") as f:
    f.write(gif)

# JPEGs with every EXIF orientation: four solid quadrants, so the orientation
# shows after lossy compression.
quad = np.zeros((16, 24, 3), np.uint8)
quad[:8, :12] = (220, 30, 30)
quad[:8, 12:] = (30, 220, 30)
quad[8:, :12] = (30, 30, 220)
quad[8:, 12:] = (230, 230, 40)
orient = []
for o in range(1, 9):
    exif = Image.Exif()
    exif[0x0112] = o
    buf = io.BytesIO()
    Image.fromarray(quad, "RGB").save(buf, "JPEG", quality=95, exif=exif.tobytes())
    name = f"orient{o}.jpg"
    with open(path(name), "wb") as f:
        f.write(buf.getvalue())
    upright = np.asarray(ImageOps.exif_transpose(Image.open(path(name))).convert("RGB"))
    h, w = upright.shape[:2]
    # Colours at the centres of the four quadrants of the upright image.
    pts = [(w // 4, h // 4), (3 * w // 4, h // 4), (w // 4, 3 * h // 4), (3 * w // 4, 3 * h // 4)]
    orient.append({"file": name, "orientation": o, "width": w, "height": h,
                   "points": [[x, y, *map(int, upright[y, x])] for x, y in pts]})


# Preprocessing, following docs/bundle.md with PyTorch.
def preprocess(img, max_side, divisible, nchw=False):
    x = torch.from_numpy(np.asarray(img.convert("RGB"), np.uint8).copy()).permute(2, 0, 1).float().div(255.0)[None]
    if nchw:  # PyTorch's generic kernel instead of its channels-last one
        x = x.contiguous()
    h0, w0 = x.shape[-2:]
    if h0 >= w0:
        h, w = max_side, max(1, int(math.floor(w0 * max_side / h0 + 0.5)))
    else:
        h, w = max(1, int(math.floor(h0 * max_side / w0 + 0.5))), max_side
    if (h, w) != (h0, w0):
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    hp, wp = int(math.ceil(h / divisible) * divisible), int(math.ceil(w / divisible) * divisible)
    x = F.pad(x, (0, wp - w, 0, hp - h))
    return {"resized": [w, h], "padded": [wp, hp], "tensor": b64(x.numpy())}


pre = []
for name, max_side, div in [("rgb.png", 32, 32), ("rgb.png", 96, 32), ("rgb.png", 53, 8), ("rgba.png", 64, 32),
                            ("gray.png", 37, 16), ("lossless.webp", 20, 8)]:
    case = preprocess(Image.open(path(name)), max_side, div)
    case["tensor_nchw"] = preprocess(Image.open(path(name)), max_side, div, nchw=True)["tensor"]
    case.update({"file": name, "max_side": max_side, "size_divisible": div})
    pre.append(case)

with open(path("preprocess_golden.json"), "w") as f:
    json.dump({"mean": MEAN, "std": STD, "preprocess": pre, "orientation": orient}, f, separators=(",", ":"))
print("wrote", sorted(os.listdir(HERE)))


# Progressive JPEGs: a normal one, and one whose last scan is repeated 300
# times (a small file that makes a decoder walk the whole image once per scan).
def markers(data):
    """Splits a JPEG into (marker, bytes) segments, SOS segments with their scan data."""
    out, p = [], 2
    while p < len(data):
        assert data[p] == 0xFF
        m = data[p + 1]
        if m == 0xD9:
            out.append((m, data[p:p + 2]))
            break
        n = struct.unpack(">H", data[p + 2:p + 4])[0]
        q = p + 2 + n
        if m == 0xDA:
            while not (data[q] == 0xFF and data[q + 1] not in (0x00, *range(0xD0, 0xD8))):
                q += 1
        out.append((m, data[p:q]))
        p = q
    return out


noise = np.kron(rng.integers(0, 256, size=(32, 32, 3)), np.ones((8, 8, 1))).astype(np.uint8)
buf = io.BytesIO()
Image.fromarray(noise, "RGB").save(buf, "JPEG", quality=80, progressive=True)
with open(path("progressive.jpg"), "wb") as f:
    f.write(buf.getvalue())
segs = markers(buf.getvalue())
scans = [s for m, s in segs if m == 0xDA]
many = b"\xff\xd8" + b"".join(s for m, s in segs if m != 0xD9) + scans[-1] * 300 + b"\xff\xd9"
with open(path("many_scans.jpg"), "wb") as f:
    f.write(many)
print("progressive.jpg has", len(scans), "scans; many_scans.jpg", len(scans) + 300, len(many), "bytes")
