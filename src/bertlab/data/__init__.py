"""From raw text to batches: corpora, prepared token stores, masking, samplers and datamodules."""
