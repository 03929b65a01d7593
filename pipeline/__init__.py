"""Vigil: a streaming video analytics pipeline (capture → preprocess → inference → postprocess → sinks)."""

__version__ = "0.2.0"
