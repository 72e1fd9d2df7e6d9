"""Building the read-only root from the spec's `rootfs` section with mmdebstrap (see recipe.py, build.py)."""
