"""Run the tests from a checkout without installing the package: import it from here."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
