"""Simulated skies and their rendering by survey instrument models (GalSim)."""
