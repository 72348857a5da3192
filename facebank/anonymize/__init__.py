"""Anonymise photos: detect every real face, pick a dissimilar target, swap, and check the result."""
