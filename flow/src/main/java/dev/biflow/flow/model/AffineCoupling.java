// The affine kernel every flow here shares: z = (x - b) * exp(-a), its inverse and its log-determinant.
package dev.biflow.flow.model;

import dev.biflow.engine.Ops;
import dev.biflow.engine.Tensor;

/**
 * TARFlow's per-token transform and RealNVP's coupling transform are the same elementwise map
 * with log-scale a and shift b computed from the other coordinates:
 * <pre>
 *   forward:  z = (x - b) * exp(-a)        log|dz/dx| = -sum(a)
 *   inverse:  x = z * exp(a) + b
 * </pre>
 * The forward uses exactly TarFlow.MetaBlock's op sequence (sub, neg, exp, mul), so a caller
 * switching to it gets the same bits. Where a == 0 and b == 0 the map is exactly the identity,
 * which is how masked coordinates pass through unchanged.
 */
public final class AffineCoupling {
    private AffineCoupling() {}

    /** z = (x - b) * exp(-a); all three the same shape (or broadcastable). */
    public static Tensor forward(Tensor x, Tensor a, Tensor b) {
        return Ops.mul(Ops.sub(x, b), Ops.exp(Ops.neg(a)));
    }

    /** x = z * exp(a) + b, the exact inverse of {@link #forward}. */
    public static Tensor inverse(Tensor z, Tensor a, Tensor b) {
        return Ops.add(Ops.mul(z, Ops.exp(a)), b);
    }

    /** log|det dz/dx| per sample: -sum(a) over every axis but the first, shape (B,). */
    public static Tensor logdetSum(Tensor a) {
        return Ops.neg(Ops.sum(a, trailingAxes(a), false));
    }

    /** The same log-determinant divided by the number of values per sample (TARFlow's per-dimension convention), (B,). */
    public static Tensor logdetMean(Tensor a) {
        return Ops.neg(Ops.mean(a, trailingAxes(a), false));
    }

    /** One value of the inverse, for samplers that solve in place on raw arrays (as TarFlow's exact inverse does). */
    public static float inverse(float z, float a, float b) {
        return z * (float) Math.exp(a) + b;
    }

    private static int[] trailingAxes(Tensor a) {
        if (a.dim() < 2)
            throw new IllegalArgumentException("affine coupling log-det needs a batch axis and at least one value axis, got shape "
                    + dev.biflow.engine.Shape.str(a.shape()));
        int[] ax = new int[a.dim() - 1];
        for (int i = 0; i < ax.length; i++) ax[i] = i + 1;
        return ax;
    }
}
