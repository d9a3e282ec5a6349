"""Models: the mini-CLIP, the ViLD detector, its RoI pooler, its losses and its inference."""
