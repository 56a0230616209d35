import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Each xdist worker gets one core; torch's default of one thread per core would
    # oversubscribe the machine and make every op wait on the others.
    torch.set_num_threads(1)
