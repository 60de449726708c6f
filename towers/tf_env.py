"""Imports TensorFlow the one way this project supports: legacy Keras (tf-keras) for TFRS.

tensorflow-recommenders 0.7.7 breaks under Keras 3, so ``TF_USE_LEGACY_KERAS=1`` must be set
before TensorFlow is first imported. Import ``tf``, ``keras`` and ``tfrs`` from here.
"""

from __future__ import annotations

import os
import sys

if "tensorflow" in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") != "1":
    raise ImportError(
        "TensorFlow was imported before towers.tf_env without TF_USE_LEGACY_KERAS=1; "
        "import towers.tf_env first (or export TF_USE_LEGACY_KERAS=1)"
    )
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf
import tensorflow_recommenders as tfrs
import tf_keras as keras

# Saving subclassed towers warns about get_config on every export; the SavedModel is tested.
tf.get_logger().setLevel("ERROR")

__all__ = ["keras", "tf", "tfrs"]
