"""Data: corpora (layout, sources, synthetic, download), audio reading and features."""
