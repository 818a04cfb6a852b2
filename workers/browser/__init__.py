"""Chromium: the warm pool, launch flags, restore, login verdict and the live view."""
