"""attnjax: compare attention mechanisms in JAX/Flax.

Data path: configs/<base>.py -> experiments/<study>.py (sweep) -> train.train_and_evaluate
-> run dirs -> compare. See ARCHITECTURE in the README.
"""

__version__ = "0.1.0"
