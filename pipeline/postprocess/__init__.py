"""Decoders per model family and vectorised NMS; the postprocess stage routes results to sinks."""
