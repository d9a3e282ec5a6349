"""Data: the asset cache, the categories, emoji art, generated scenes and COCO files."""
