"""toolturn: multi-turn tool-use dialogue generation, training and evaluation."""
__version__ = "0.1.0"
