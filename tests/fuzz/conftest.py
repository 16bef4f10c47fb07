"""Property-based fuzzing of every parser of hospital-written bytes.

No ``__init__.py`` here: ``hostile`` (shared strategies) is put on the path instead, the
same way ``tests/stacks`` shares its helpers.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for hostile, in any import mode
