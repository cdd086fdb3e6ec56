"""``torch.compile(model)`` trained by rangerlab optimizers follows the eager run."""

import pytest
import torch
from torch import nn

import rangerlab


def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.GELU(), nn.Linear(16, 4))


def train(model, name, steps=8):
    opt = rangerlab.create_optimizer(model, name, lr=0.01, weight_decay=0.01)
    sched = rangerlab.schedules.warmup_cosine(opt, 2, steps)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, y = torch.randn(16, 8, generator=gen), torch.randint(0, 4, (16,), generator=gen)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
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
