"""The telemetry loggers inside real runs: a Lightning Trainer with its CSV logger, a Hugging Face
Trainer, and TensorBoard event files written by the tensorboard package and read back."""

import csv

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import rangerlab
from rangerlab.loggers import log_telemetry

STEPS = 6
EVERY = 2


def data(n=8 * STEPS):
    gen = torch.Generator().manual_seed(1)
    return TensorDataset(torch.randn(n, 6, generator=gen), torch.randint(0, 3, (n,), generator=gen))


def test_tensorboard_event_files_hold_the_telemetry(tmp_path):
    pytest.importorskip("tensorboard", reason="the 'test' extra installs tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    opt = rangerlab.create_optimizer(model, "lars", lr=0.1, telemetry=True)
    x, y = data().tensors
    written = {}
    with SummaryWriter(tmp_path) as writer:
        for step in range(1, STEPS + 1):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[:8]), y[:8]).backward()
            opt.step()
            if step % EVERY == 0:
                written[step] = log_telemetry(writer, opt, step)
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    tag = "rangerlab/trust_ratio/0.weight"
    assert tag in events.Tags()["scalars"]
    got = [(e.step, e.value) for e in events.Scalars(tag)]
    want = [(s, v["trust_ratio/0.weight"]) for s, v in written.items()]
    assert [s for s, _ in got] == [s for s, _ in want] == [2, 4, 6]
    assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-6)
    assert "rangerlab/grad_norm/2.bias" in events.Tags()["scalars"]
    assert all(v["steps"] == EVERY for v in written.values())  # each value covers its interval


def test_lightning_callback_logs_named_telemetry(tmp_path):
    L = pytest.importorskip("lightning", reason="install the 'integrations' extra")
    from rangerlab.loggers.lightning import TelemetryCallback

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.net = nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.Linear(8, 3))

        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self):  # plain parameters: the callback names them
            return rangerlab.RangerLARS(self.parameters(), lr=0.01, k=2, telemetry=True)

    callback = TelemetryCallback(every_n_steps=EVERY)
    logger = L.pytorch.loggers.CSVLogger(tmp_path, name="run")
    trainer = L.Trainer(
        max_steps=STEPS, accelerator="cpu", devices=1, logger=logger, callbacks=[callback],
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
    )  # fmt: skip
    trainer.fit(Module(), DataLoader(data(), batch_size=8))
    assert [r["step"] for r in callback.records] == [2.0, 4.0, 6.0]
    assert all(r["steps"] == EVERY for r in callback.records)
    rows = list(csv.DictReader(open(logger.log_dir + "/metrics.csv")))
    key = "rangerlab/trust_ratio/net.0.weight"
    logged = [float(r[key]) for r in rows if r.get(key)]
    assert logged == pytest.approx([r["trust_ratio/net.0.weight"] for r in callback.records])
    assert any(r.get("rangerlab/lookahead_distance/net.2.bias") for r in rows)


def test_huggingface_callback_in_a_real_trainer(tmp_path):
    transformers = pytest.importorskip("transformers", reason="install the 'integrations' extra")
    from rangerlab.loggers.huggingface import TelemetryCallback

    config = transformers.GPT2Config(vocab_size=32, n_positions=16, n_embd=16, n_layer=1, n_head=2)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config)
    ids = torch.randint(0, 32, (4 * STEPS, 12), generator=torch.Generator().manual_seed(1))
    dataset = [{"input_ids": row, "labels": row} for row in ids]
    opt = rangerlab.create_optimizer(model, "ranger", lr=0.01, telemetry=True)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), max_steps=STEPS, per_device_train_batch_size=4,
        save_strategy="no", logging_strategy="no", report_to="none", use_cpu=True, seed=0,
        disable_tqdm=True,
    )  # fmt: skip
    callback = TelemetryCallback(every_n_steps=EVERY)
    trainer = transformers.Trainer(
        model=model, args=args, train_dataset=dataset, optimizers=(opt, None),
        callbacks=[callback],
    )  # fmt: skip
    trainer.train()
    entries = [e for e in trainer.state.log_history if any(k.startswith("rangerlab/") for k in e)]
    assert [e["step"] for e in entries] == [2, 4, 6]
    key = "rangerlab/adaptive/transformer.h.0.mlp.c_fc.weight"
    assert all(key in e for e in entries)
    assert entries[0][key] == 0.0 and "rangerlab/rectifier/lm_head.weight" not in entries[0]
    assert all(e["rangerlab/steps"] == EVERY for e in entries)


def test_every_n_steps_is_validated():
    from rangerlab.loggers import check_every

    with pytest.raises(ValueError, match="every_n_steps"):
        check_every(0)


def test_lightning_callback_scopes_several_optimizers():
    pytest.importorskip("lightning", reason="install the 'integrations' extra")
    from types import SimpleNamespace

    from rangerlab.loggers.lightning import TelemetryCallback

    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    opts = [rangerlab.Adam(m.parameters(), telemetry=True) for m in model]
    logged = []
    logger = SimpleNamespace(log_metrics=lambda metrics, step: logged.append((step, metrics)))
    trainer = SimpleNamespace(global_step=0, optimizers=opts, loggers=[logger])
    callback = TelemetryCallback(every_n_steps=1)
    callback.on_train_start(trainer, model)
    model(torch.randn(4, 3)).sum().backward()
    for opt in opts:
        opt.step()
    trainer.global_step = 1
    callback.on_train_batch_end(trainer, model, None, None, 0)
    callback.on_train_batch_end(trainer, model, None, None, 1)  # same step: logged once
    assert len(logged) == 1 and logged[0][0] == 1
    assert {"rangerlab/opt0/grad_norm/0.weight", "rangerlab/opt1/grad_norm/1.bias"} <= set(
        logged[0][1]
    )
    assert "opt1/weight_norm/1.weight" in callback.records[0]


def test_lookahead_wrapper_samples_every_nth_step():
    model = nn.Linear(3, 2)
    for inner in (torch.optim.SGD(model.parameters(), lr=0.1), rangerlab.Adam(model.parameters())):
        opt = rangerlab.Lookahead(inner, k=1, telemetry=2)
        got = []
        for _ in range(4):
            model(torch.randn(4, 3)).sum().backward()
            opt.step()
            got.append(opt.telemetry())
        assert ["lookahead_distance/group0.param0" in g for g in got] == [False, True] * 2
        assert [g["recorded_steps"] for g in got] == [0.0, 1.0] * 2
        assert all("weight_norm/group0.param0" in g for g in got[1::2])
