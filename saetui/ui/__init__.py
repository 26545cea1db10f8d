"""Shared UI pieces: safe text rendering, shading, common widgets."""
