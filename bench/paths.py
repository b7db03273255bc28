"""Where the checkout lies: the benchmarks run from it, and the processes they start import bench/ from it."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
"""The repository's root folder."""
