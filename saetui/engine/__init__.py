"""saetui's engine: SAEs, models, corpora, metrics and caches. No Textual imports here."""
