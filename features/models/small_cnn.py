"""The small CNN a course trains from scratch: the baseline transfer learning is measured against.

Four blocks of Conv(3x3)-BatchNorm-ReLU-MaxPool with 32, 64, 128 and 256 filters, then
global pooling: 0.39 million weights, against EfficientNet-Lite0's 3.4 million, so CPU
epochs are short and it reaches its own plateau within a benchmark's budget. It has no
pretrained weights; its input is 0-255 RGB rescaled to 0-1 (the registry's "rescale").

Its batch normalisation keeps moving statistics with momentum 0.9, not Keras' 0.99: with the
shared photos' 55 steps an epoch, 0.99 averages over about two epochs of a network that is still
changing fast, and the statistics it is scored with lag behind it. Measured on cats vs dogs (the
same training, only the momentum changed): validation accuracy 0.50 for the first 7 epochs with
0.99, 0.53-0.62 over the first 6 with 0.9.
The course's head (dense, dropout, output) is added by :func:`features.train.model.build_model`,
as for every backbone.
"""

from __future__ import annotations

FILTERS = (32, 64, 128, 256)


def build_small_cnn(input_shape, pooling: str | None = "avg", filters=FILTERS):
    """The network as a ``keras.Model`` from the rescaled image to its pooled features.

    Args:
        pooling: "avg", "max", or None for the last block's feature map.
    """
    import keras
    from keras import layers

    inputs = keras.Input(input_shape)
    x = inputs
    for n, width in enumerate(filters, 1):
        x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"block{n}_conv")(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"block{n}_bn")(x)
        x = layers.ReLU(name=f"block{n}_relu")(x)
        x = layers.MaxPooling2D(2, name=f"block{n}_pool")(x)
    if pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name="max_pool")(x)
    return keras.Model(inputs, x, name="small_cnn")
