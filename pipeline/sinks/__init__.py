"""Outputs: JSON Lines records and annotated video. Each sink runs in its own stage thread."""
