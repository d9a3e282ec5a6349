"""Export: the vild bundle of a trained detector, and the Go tests' tiny fixture bundle."""
