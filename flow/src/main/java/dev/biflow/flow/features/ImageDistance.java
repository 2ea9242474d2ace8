// A differentiable distance between image batches: the seam between BiFlow's losses and the feature networks.
package dev.biflow.flow.features;

import dev.biflow.engine.Tensor;

/**
 * A distance D(a, b) between two batches of images (B, C, H, W) in [-1, 1], returned as a scalar
 * (mean over the batch) that is differentiable with respect to {@code a} (the generated images;
 * {@code b} is the target and gets no gradient). MSE, the LPIPS-style feature distance and the
 * second network's pooled-feature distance all implement it, so the backward model's loss is a
 * list of ImageDistance terms with adaptive weights.
 *
 * <p>Implementations: {@link MseDistance}; {@link LpipsDistance} on a {@link FashionConvNet} and
 * {@link PooledFeatureDistance} on a {@link FashionConvNeXt}, both loaded from checkpoints trained
 * by {@link FeatureNetTrainer} (see {@link FeatureNets} for the file names). Their networks are
 * frozen; the evaluation network {@link FashionNetEval} is refused, since it grades the samples.
 */
public interface ImageDistance {
    /** A short name for logs and configs, e.g. "mse", "lpips-fashion", "pooled-fashion". */
    String name();

    /** Scalar mean distance over the batch; gradients flow to a only. */
    Tensor distance(Tensor a, Tensor b);
}
