"""``torch.compile(model)`` trained by rangerlab optimizers follows the eager run."""

import pytest
import torch
from torch import nn

import rangerlab


def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.GELU(), nn.Linear(16, 4))


def run(model, opt, sched, steps):
    """Train on ``steps`` (a range): each step's batch depends on its number only."""
    for step in steps:
        gen = torch.Generator().manual_seed(100 + step)
        x, y = torch.randn(16, 8, generator=gen), torch.randint(0, 4, (16,), generator=gen)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


def train(model, name, steps=8):
    opt = rangerlab.create_optimizer(model, name, lr=0.01, weight_decay=0.01)
    run(model, opt, rangerlab.schedules.warmup_cosine(opt, 2, steps), range(steps))
    return opt


@pytest.mark.parametrize("name", ["ranger_lars"])
def test_compiled_model_trains_like_eager(name):
    eager = make_model()
    train(eager, name)
    inner = make_model()
    compiled = torch.compile(inner)
    opt = train(compiled, name)
    assert len(opt.state) == len(list(inner.parameters()))  # every parameter was stepped
    for a, b in zip(inner.parameters(), eager.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert not torch.equal(inner[0].weight, make_model()[0].weight)


def test_compiled_run_resumes_exactly_from_a_checkpoint(tmp_path):
    """The README's "a resumed run continues exactly ... with ``torch.compile(model)`` too"."""
    steps, half = 8, 4

    def build():
        inner = make_model()
        opt = rangerlab.create_optimizer(inner, "ranger", lr=0.01, weight_decay=0.01, k=3)
        return inner, torch.compile(inner), opt, rangerlab.schedules.warmup_cosine(opt, 2, steps)

    inner, compiled, opt, sched = build()
    run(compiled, opt, sched, range(half))
    # Mid-cycle (Lookahead syncs at steps 3 and 6) and mid-schedule.
    state = {"model": inner.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}
    torch.save(state, tmp_path / "ckpt.pt")
    run(compiled, opt, sched, range(half, steps))

    resumed_inner, resumed, resumed_opt, resumed_sched = build()
    saved = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    resumed_inner.load_state_dict(saved["model"])
    resumed_opt.load_state_dict(saved["opt"])
    resumed_sched.load_state_dict(saved["sched"])
    run(resumed, resumed_opt, resumed_sched, range(half, steps))

    for a, b in zip(resumed_inner.parameters(), inner.parameters(), strict=True):
        assert torch.equal(a, b)
    with opt.slow_weights(), resumed_opt.slow_weights():
        for a, b in zip(resumed_inner.parameters(), inner.parameters(), strict=True):
            assert torch.equal(a, b)
    assert resumed_sched.get_last_lr() == sched.get_last_lr()
    assert not torch.equal(inner[0].weight, make_model()[0].weight)
