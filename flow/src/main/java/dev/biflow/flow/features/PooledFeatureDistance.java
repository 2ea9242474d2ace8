// The second perceptual distance: normalised, globally pooled penultimate features of FashionConvNeXt.
package dev.biflow.flow.features;

import dev.biflow.engine.Grad;
import dev.biflow.engine.Ops;
import dev.biflow.engine.Tensor;

import java.io.IOException;
import java.nio.file.Path;

/**
 * Our stand-in for the paper's ConvNeXt perceptual term: the squared Euclidean distance between
 * unit-normalised, globally pooled penultimate features of {@link FashionConvNeXt}:
 * <pre>
 *   g = pooled(x) / sqrt(|pooled(x)|^2 + eps),   D = mean_batch |g(a) - g(b)|^2   (in [0, 4])
 * </pre>
 * A global, semantic comparison where {@link LpipsDistance} is local. The network is frozen at
 * construction; gradients reach {@code a} only.
 */
public final class PooledFeatureDistance implements ImageDistance {
    private final FeatureNet net;

    public PooledFeatureDistance(FeatureNet net) { this.net = LpipsDistance.requireLossNet(net, "PooledFeatureDistance"); }

    /** Loads a {@link FashionConvNeXt} checkpoint (the usual case) or any non-eval feature network. */
    public static PooledFeatureDistance load(Path path) throws IOException { return new PooledFeatureDistance(FeatureNets.load(path)); }

    public FeatureNet net() { return net; }

    @Override
    public String name() { return "pooled-fashion"; }

    @Override
    public Tensor distance(Tensor a, Tensor b) {
        LpipsDistance.checkPair(a, b, name());
        Tensor ga = unit(net.run(a).penultimate());
        Tensor gb;
        try (var ng = Grad.noGrad()) {
            gb = unit(net.run(b.detach()).penultimate());
        }
        Tensor diff = Ops.sub(ga, gb);                              // (B, D)
        return Ops.mean(Ops.sum(Ops.mul(diff, diff), new int[]{1}, false));
    }

    /** (B, D) rows scaled to unit norm. */
    static Tensor unit(Tensor g) {
        return Ops.div(g, Ops.sqrt(Ops.addScalar(Ops.sum(Ops.mul(g, g), new int[]{1}, true), LpipsDistance.EPS)));
    }

    @Override
    public String toString() { return name() + "[" + net.config.arch().id + "]"; }
}
