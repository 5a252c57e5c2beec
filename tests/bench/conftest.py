"""bench/ is not installed (a PyPI project owns the name): it runs from the
checkout, so put the checkout first on sys.path for these tests, whatever the
working directory (``python -m bench`` subprocesses run with cwd=ROOT)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
