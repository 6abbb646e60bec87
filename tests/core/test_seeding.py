"""set_seed: the same seed gives the same draws; the data notebooks' call leaves torch unloaded."""

import random
import subprocess
import sys

import numpy as np

from brainvlm.core.seeding import set_seed


def test_the_same_seed_gives_the_same_python_numpy_and_torch_draws():
    import torch

    def draws():
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    set_seed(3)
    first = draws()
    set_seed(3)
    assert draws() == first
    set_seed(4)
    assert draws() != first


def test_without_torch_seeds_python_and_numpy_and_never_loads_torch():
    code = ("import sys, random, numpy as np\nfrom brainvlm.core.seeding import set_seed\n"
            "set_seed(5, with_torch=False)\nprint('torch' in sys.modules, random.random(), np.random.rand())")
    loaded, python_draw, numpy_draw = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                                     check=True).stdout.split()
    assert loaded == "False"
    random.seed(5)
    np.random.seed(5)
    assert (float(python_draw), float(numpy_draw)) == (random.random(), float(np.random.rand()))
