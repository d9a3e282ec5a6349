"""Tools: diagnostics outside the pipeline (where accuracy and training-step time go)."""
