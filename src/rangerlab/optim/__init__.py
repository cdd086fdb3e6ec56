"""rangerlab's optimizers: the `Chain` adapter, the presets and the Lookahead wrapper."""

from .adam import Adam
from .chain import Chain
from .lamb import LAMB
from .lars import LARS
from .lookahead import Lookahead
from .radam import RAdam
from .ranger import Ranger, RangerLARS
from .sgd import SGD

__all__ = ["SGD", "LAMB", "Adam", "Chain", "LARS", "Lookahead", "RAdam", "Ranger", "RangerLARS"]
