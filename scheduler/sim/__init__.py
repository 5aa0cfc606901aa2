"""Cluster simulator: the engine plus N replica models on virtual time (``loop.py``)."""
