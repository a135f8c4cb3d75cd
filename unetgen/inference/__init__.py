"""Images → predictions: overlap-tile layout (pure integers), image files and checks, the runners and the stitching."""
