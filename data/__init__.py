"""Dataset preparation and the generated demo dataset; no real dataset is committed here."""
