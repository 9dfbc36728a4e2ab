"""attnjax: compare attention mechanisms in JAX/Flax.

Data path: configs/<base>.py -> experiments/<study>.py (sweep) -> train.train_and_evaluate
-> run dirs -> compare. See ARCHITECTURE in the README.
"""

from pathlib import Path

__version__ = "0.1.0"
REPO_ROOT = Path(__file__).resolve().parent.parent  # the checkout (editable install)
