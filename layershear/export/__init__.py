"""Export stage: the Exporter (streams shards, rewrites config and index), model card, layershear.json
record, Hub push, GGUF conversion, atomic folders."""
