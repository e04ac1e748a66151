"""Inference: media to codes and back (the tokenizer, streaming in chunks, codes files) and media from a
prior's samples. Built on the run directory (vqtoolkit.rundir), never on training."""
