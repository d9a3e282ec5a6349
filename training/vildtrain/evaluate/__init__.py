"""Evaluation: COCO-style AP of a detector on the held-out scene sets."""
