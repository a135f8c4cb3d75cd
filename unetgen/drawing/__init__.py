"""Plan → pictures: the paper's Figure 1 as SVG for any network, and PNG from it."""
