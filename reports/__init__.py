"""Figures and tables rendered from a suite's records alone (docs/reports.md).

The Agg backend is chosen here, before any module imports pyplot, so rendering works without a
display (CI, a GPU node, an SSH session).
"""

import matplotlib

matplotlib.use("Agg")
