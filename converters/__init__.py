"""ANN -> SNN conversion pipeline (Sinabs)."""
