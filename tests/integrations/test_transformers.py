"""Hugging Face ``transformers.Trainer`` with ``optimizers=(rangerlab optimizer, schedule)`` on a
tiny GPT-2 built from a config (nothing downloaded), checkpointed and resumed by the Trainer."""

import pytest
import torch

import rangerlab
from rangerlab.schedules import flat_cosine

transformers = pytest.importorskip("transformers", reason="install the 'integrations' extra")

TOTAL_STEPS = 8
BATCH = 4


def tiny_gpt2():
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=32, n_positions=16, n_embd=16, n_layer=1, n_head=2, tie_word_embeddings=True
    )
    return transformers.GPT2LMHeadModel(config)


class Tokens(torch.utils.data.Dataset):
    """Random token sequences; labels are the inputs (the model shifts them)."""

    def __init__(self, n):
        gen = torch.Generator().manual_seed(1)
        self.ids = torch.randint(0, 32, (n, 12), generator=gen)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def train(tmp_path, model, resume=None):
    opt = rangerlab.create_optimizer(model, "ranger", lr=0.01, weight_decay=0.01, k=3)
    sched = flat_cosine(opt, TOTAL_STEPS)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), max_steps=TOTAL_STEPS, per_device_train_batch_size=BATCH,
        save_strategy="steps", save_steps=TOTAL_STEPS // 2, logging_strategy="no",
        report_to="none", use_cpu=True, seed=0, disable_tqdm=True,
    )  # fmt: skip
    trainer = transformers.Trainer(
        model=model, args=args, train_dataset=Tokens(BATCH * TOTAL_STEPS // 2),
        optimizers=(opt, sched),
    )  # fmt: skip
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def test_trainer_runs_checkpoints_and_resumes_exactly(tmp_path):
    straight_model = tiny_gpt2()
    straight = train(tmp_path / "straight", straight_model)
    assert straight.optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert straight.state.global_step == TOTAL_STEPS

    ckpt = tmp_path / "straight" / f"checkpoint-{TOTAL_STEPS // 2}"
    saved = torch.load(ckpt / "optimizer.pt", weights_only=True)
    assert saved["param_groups"][0]["lookahead_step"] == TOTAL_STEPS // 2  # mid cycle (k=3)
    assert all("slow_param" in s for s in saved["state"].values())
    # LayerNorm weights and biases are in the no-decay group.
    assert [g["weight_decay"] for g in saved["param_groups"]] == [0.01, 0.0]

    resumed_model = tiny_gpt2()
    resumed = train(tmp_path / "resumed", resumed_model, resume=str(ckpt))
    assert resumed.state.global_step == TOTAL_STEPS
    for a, b in zip(resumed_model.parameters(), straight_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(straight_model.transformer.h[0].mlp.c_fc.weight,
                           tiny_gpt2().transformer.h[0].mlp.c_fc.weight)  # fmt: skip
