"""Writes the browser test's colour scenes: flat shapes on plain backgrounds.

Run from this directory with /usr/bin/python3 (Pillow); the PNGs are committed.
The colour detector of handlers/handlerstest, behind web/e2e/colorserver,
finds their shapes by colour, so the test knows its answers exactly. (The web
page's own samples are pictogram scenes: web/static/samples/README.md.)
"""
from PIL import Image, ImageDraw


def scene(name, size, bg, shapes):
    img = Image.new("RGB", size, bg)
    d = ImageDraw.Draw(img)
    for kind, box, fill in shapes:
        (d.ellipse if kind == "circle" else d.rectangle)(box, fill=fill)
    img.save(name, optimize=True)


scene("shapes.png", (320, 240), (245, 245, 240), [
    ("rect", (30, 40, 110, 120), (220, 30, 30)),
    ("circle", (170, 60, 270, 160), (30, 60, 220)),
])
scene("night.png", (320, 240), (20, 20, 30), [
    ("rect", (40, 60, 140, 180), (230, 230, 40)),
    ("circle", (190, 40, 290, 140), (240, 240, 250)),
])
