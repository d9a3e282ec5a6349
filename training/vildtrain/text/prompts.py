"""Prompt templates: the captions a category name is placed into.

The mini-CLIP is trained on captions built from these templates (plus synonyms),
and a category's text embedding is the renormalised mean over all templates
(ViLD's prompt ensemble). The exporter copies TEMPLATES into the bundle manifest,
so the Go textbank builds exactly the same prompts.
"""
from __future__ import annotations

TEMPLATES: list[str] = [
    "a photo of a {}.",
    "a picture of a {}.",
    "a drawing of a {}.",
    "an icon of a {}.",
    "a {} in the scene.",
    "there is a {} in the scene.",
    "a small {}.",
    "a large {}.",
    "a cartoon {}.",
    "an emoji of a {}.",
    "a close-up photo of the {}.",
    "a rendering of a {}.",
]


def prompts(name: str, templates: list[str] | None = None) -> list[str]:
    """Return the name placed into every template."""
    return [t.format(name) for t in (templates or TEMPLATES)]
