import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

# triton reads TRITON_INTERPRET once, when something first imports it (torch.compile's tests can
# do that before test_triton.py runs), so the switch to its interpreter is made here, for the
# whole session, where there is no GPU; on a GPU machine the compiled kernels are tested instead.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
