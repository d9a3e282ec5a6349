"""Training: the mini-CLIP trainer and the detector trainer (data, step, run, command)."""
