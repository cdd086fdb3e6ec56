"""Classic 2-D test surfaces for the optimizer race, vectorised over a batch of points."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Surface:
    """A loss surface ``f(xy)`` for ``xy`` of shape ``(..., 2)``, with its known minimum.

    Attributes:
        name: identifier.
        f: the function.
        minimum: a global minimiser ``(x, y)``.
        f_min: the global minimum value.
        start: the nominal starting point of the race.
        box: plot limits ``(xmin, xmax, ymin, ymax)``.
    """

    name: str
    f: Callable[[Tensor], Tensor]
    minimum: tuple[float, float]
    f_min: float
    start: tuple[float, float]
    box: tuple[float, float, float, float]


def rosenbrock(p: Tensor) -> Tensor:
    """``(1 - x)^2 + 100 (y - x^2)^2``: a curved, narrow valley; minimum 0 at (1, 1)."""
    x, y = p[..., 0], p[..., 1]
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def rastrigin(p: Tensor) -> Tensor:
    """``20 + sum(v^2 - 10 cos(2 pi v))``: a bowl covered in local minima; minimum 0 at (0, 0)."""
    return 20 + (p**2 - 10 * torch.cos(2 * math.pi * p)).sum(-1)


def beale(p: Tensor) -> Tensor:
    """Beale's function: flat plateaus and sharp ridges; minimum 0 at (3, 0.5)."""
    x, y = p[..., 0], p[..., 1]
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


def saddle(p: Tensor) -> Tensor:
    """``x^2 + y^4/4 - y^2/2``: a saddle at the origin between minima -1/4 at (0, +-1)."""
    x, y = p[..., 0], p[..., 1]
    return x**2 + y**4 / 4 - y**2 / 2


SURFACES: dict[str, Surface] = {
    "rosenbrock": Surface("rosenbrock", rosenbrock, (1.0, 1.0), 0.0, (-1.2, 1.0), (-2, 2, -1, 3)),
    "rastrigin": Surface("rastrigin", rastrigin, (0.0, 0.0), 0.0, (-2.2, 1.7), (-3, 3, -3, 3)),
    "beale": Surface("beale", beale, (3.0, 0.5), 0.0, (1.0, 1.5), (-1, 4.5, -1.5, 2)),
    # Starts almost on the saddle's ridge (y ~ 1e-3): escaping it is the test.
    "saddle": Surface("saddle", saddle, (0.0, 1.0), -0.25, (1.5, 1e-3), (-2, 2, -1.5, 1.5)),
}
