"""Datasets the project generates itself (no downloads): see :mod:`stepprune.data.synthvqa`."""
