"""nge: neural architecture search with Neural Graph Embedding (Li, Gong, Zhu, AAAI 2020)."""

__version__ = "0.1.0"
