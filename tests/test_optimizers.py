"""LazyAdam: Adam on the rows a batch touched, nothing on the others."""

from __future__ import annotations

import numpy as np

from towers.tf_env import keras, tf
from training.optimizers import LazyAdam


def _step(optimizer, table: tf.Variable, rows: list[int]) -> None:
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.gather(table, rows) ** 2)
    (grad,) = tape.gradient(loss, [table])
    assert isinstance(grad, tf.IndexedSlices)  # what an embedding lookup gives
    optimizer.apply_gradients([(grad, table)])


def test_touched_rows_move_as_adam_moves_them_and_untouched_rows_do_not() -> None:
    start = np.arange(12, dtype=np.float32).reshape(6, 2) / 10 + 1
    lazy_table, dense_table = tf.Variable(start), tf.Variable(start)
    lazy, dense = LazyAdam(0.1), keras.optimizers.Adam(0.1)
    # Step 1 touches rows 0 and 2 (row 2 twice: the gradients are summed).
    _step(lazy, lazy_table, [0, 2, 2])
    _step(dense, dense_table, [0, 2, 2])
    np.testing.assert_allclose(lazy_table.numpy(), dense_table.numpy(), rtol=1e-6)
    assert (lazy_table.numpy()[[1, 3, 4, 5]] == start[[1, 3, 4, 5]]).all()
    # Step 2 touches row 1 only: Keras' Adam moves rows 0 and 2 again on their momentum,
    # the lazy one leaves them where step 1 put them.
    after_one = lazy_table.numpy().copy()
    _step(lazy, lazy_table, [1])
    _step(dense, dense_table, [1])
    lazy_now, dense_now = lazy_table.numpy(), dense_table.numpy()
    np.testing.assert_array_equal(lazy_now[[0, 2]], after_one[[0, 2]])
    assert not np.allclose(dense_now[[0, 2]], after_one[[0, 2]])
    np.testing.assert_allclose(lazy_now[1], dense_now[1], rtol=1e-6)


def test_dense_weights_get_plain_adam() -> None:
    lazy_w, dense_w = tf.Variable([[1.0, -2.0]]), tf.Variable([[1.0, -2.0]])
    lazy, dense = LazyAdam(0.05), keras.optimizers.Adam(0.05)
    for _ in range(3):
        for opt, w in ((lazy, lazy_w), (dense, dense_w)):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(w**2)
            opt.apply_gradients(zip(tape.gradient(loss, [w]), [w], strict=True))
    np.testing.assert_allclose(lazy_w.numpy(), dense_w.numpy(), rtol=1e-6)
