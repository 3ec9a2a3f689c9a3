"""Data layer: downloads, safe extraction, dataset preparation and the demo world."""
