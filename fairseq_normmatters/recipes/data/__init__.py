"""Preparing a corpus for fairseq: read (WMT14, IWSLT14 or a plain corpus), cleaned as Moses does,
sentencepiece, binarized as fairseq-preprocess does; streamed on worker processes."""
