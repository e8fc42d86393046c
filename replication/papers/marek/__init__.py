"""Marek et al. 2025, *Small Batch Size Training for Language Models* (arXiv 2507.07101): one module per notebook topic."""
