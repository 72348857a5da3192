"""facebank: synthetic faces guaranteed dissimilar to the real ones they replace."""

__version__ = "0.1.0"
