from __future__ import annotations

import sys
from pathlib import Path

# tests/whep_client.py is shared by the integration tests and the benchmark.
sys.path.insert(0, str(Path(__file__).parent))
