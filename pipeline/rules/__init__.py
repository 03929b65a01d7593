"""Zones, lines and safety rules over tracked objects; each rule turns per-frame conditions into
debounced incidents (one `start`, optional `update`s, one `end`)."""
