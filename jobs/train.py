"""Main job. Until the training pipeline lands, this runs the best end-to-end thing that exists: every
registered pruning method on the tiny backbone, through the real loading path (see pipeline/smoke.py).

    python jobs/train.py
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a fresh clone without installing

from pipeline.smoke import main  # noqa: E402

if __name__ == "__main__":
    main()
