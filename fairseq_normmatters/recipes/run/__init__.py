"""One run: its configuration and fairseq-train command, its folder, the training (stopped
gracefully, one writer at a time) and the evaluation (averaged checkpoints, BLEU, perplexity)."""
