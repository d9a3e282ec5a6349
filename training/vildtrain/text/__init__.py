"""Text: prompt templates, the CLIP tokenizer and its BPE trainer."""
