"""PyTorch Lightning: a rangerlab optimizer and schedule from ``configure_optimizers``, and a
checkpoint resumed through Lightning's own mechanism continuing the uninterrupted run exactly."""

import copy

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import rangerlab
from rangerlab.schedules import flat_cosine

L = pytest.importorskip("lightning", reason="install the 'integrations' extra")

TOTAL_STEPS = 12
BATCHES_PER_EPOCH = 4


class TinyClassifier(L.LightningModule):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.ReLU(), nn.Linear(16, 3))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        opt = rangerlab.create_optimizer(self, "ranger", lr=0.02, weight_decay=0.01, k=5)
        sched = flat_cosine(opt, total_steps=TOTAL_STEPS, flat_fraction=0.5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def loader():
    """The same batch, BATCHES_PER_EPOCH times: Lightning restarts a plain DataLoader from its
    first batch when it resumes, so only identical batches make the resumed run comparable."""
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 6, generator=gen), torch.randint(0, 3, (8,), generator=gen)
    reps = (BATCHES_PER_EPOCH, 1)
    return DataLoader(TensorDataset(x.repeat(reps), y.repeat(BATCHES_PER_EPOCH)), batch_size=8)


class CaptureOptimizerAtStart(L.Callback):
    def on_train_start(self, trainer, pl_module):
        self.state = copy.deepcopy(trainer.optimizers[0].state_dict())


def trainer(tmp_path, max_steps, callbacks=()):
    return L.Trainer(
        max_steps=max_steps, accelerator="cpu", devices=1, logger=False,
        enable_progress_bar=False, enable_model_summary=False,
        callbacks=list(callbacks), default_root_dir=tmp_path,
    )  # fmt: skip


def assert_state_equal(a, b):
    assert a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for key in a["state"]:
        assert a["state"][key].keys() == b["state"][key].keys()
        for name, value in a["state"][key].items():
            torch.testing.assert_close(value, b["state"][key][name], rtol=0, atol=0)


def test_lightning_trains_checkpoints_and_resumes_exactly(tmp_path):
    saver = L.pytorch.callbacks.ModelCheckpoint(tmp_path, every_n_epochs=1, save_top_k=-1)
    straight = TinyClassifier()
    trainer(tmp_path, TOTAL_STEPS, [saver]).fit(straight, loader())
    assert straight.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)

    ckpt = tmp_path / "epoch=1-step=8.ckpt"  # after 8 steps: mid Lookahead cycle (k=5)
    saved = torch.load(ckpt, weights_only=True)["optimizer_states"][0]
    assert saved["param_groups"][0]["lookahead_step"] == 8
    assert all("slow_param" in s and "exp_avg" in s for s in saved["state"].values())

    capture = CaptureOptimizerAtStart()
    resumed = TinyClassifier()
    trainer(tmp_path / "resumed", TOTAL_STEPS, [capture]).fit(resumed, loader(), ckpt_path=ckpt)
    assert_state_equal(capture.state, saved)
    for a, b in zip(resumed.parameters(), straight.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(straight.net[0].weight, TinyClassifier().net[0].weight)
