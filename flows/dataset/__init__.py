"""Dataset assembly: per-prompt rows, binarisation, streaming Arrow/Parquet writes, the card."""
