"""Integration tests run offline: nothing may be downloaded, and no experiment tracker starts."""

import os

for _name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ[_name] = "1"
os.environ["WANDB_MODE"] = "disabled"
