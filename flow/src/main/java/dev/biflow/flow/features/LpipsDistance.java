// LPIPS-style perceptual distance: channel-normalised feature maps of FashionConvNet, squared differences.
package dev.biflow.flow.features;

import dev.biflow.engine.Grad;
import dev.biflow.engine.Ops;
import dev.biflow.engine.Shape;
import dev.biflow.engine.Tensor;

import java.io.IOException;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;

/**
 * An LPIPS-style distance (Zhang et al. 2018) on the project's own {@link FashionConvNet}, the
 * paper's "+LPIPS" term. For each layer l of {@link FeatureNet.Features#maps()}:
 * <pre>
 *   f^_l = f_l / sqrt(sum_c f_l^2 + eps)                     unit norm over channels at each pixel
 *   d_l  = mean_{h,w} sum_c (f^_l(a) - f^_l(b))^2
 *   D    = mean_batch sum_l w_l d_l
 * </pre>
 * with eps = 1e-4 inside the root. LPIPS adds 1e-10 outside the root, which makes f^ jump from 0
 * to a unit vector when a pixel's channels, all 0 after the ReLU, become slightly positive (seen in
 * tiny untrained nets: a finite difference of 1.2 where the derivative is -0.09). Inside the root,
 * eps caps the gain at 1/sqrt(eps) = 100 and only bends norms below ~0.03; in the trained
 * FashionConvNet the smallest per-pixel norms on test images are ~0.3 (0.1% quantile, first layer),
 * with no all-zero pixel, so trained distances are unaffected.
 * The layer weights are uniform (w_l = 1) by default: LPIPS learns per-channel weights from human
 * similarity judgements, which do not exist for this data, so this is the "uniform-weight LPIPS"
 * variant; other weights can be passed. Not comparable to LPIPS numbers of the VGG/AlexNet model.
 *
 * <p>The network is frozen at construction ({@code requiresGrad(false)}, eval mode): gradients
 * reach {@code a} only. {@code b}'s features are computed without recording a graph.
 */
public final class LpipsDistance implements ImageDistance {
    /** Added under the square root of the channel norm. */
    public static final float EPS = 1e-4f;

    private final FeatureNet net;
    private final float[] weights;

    /** Uniform layer weights. */
    public LpipsDistance(FeatureNet net) { this(net, null); }

    /** Explicit per-layer weights (one per feature map of the network), or null for uniform. */
    public LpipsDistance(FeatureNet net, float[] layerWeights) {
        this.net = requireLossNet(net, "LpipsDistance");
        this.weights = layerWeights == null ? null : layerWeights.clone();
    }

    /** Loads a {@link FashionConvNet} checkpoint (the usual case) or any non-eval feature network. */
    public static LpipsDistance load(Path path) throws IOException { return new LpipsDistance(FeatureNets.load(path)); }

    /** The network whose features are compared. */
    public FeatureNet net() { return net; }

    @Override
    public String name() { return "lpips-fashion"; }

    @Override
    public Tensor distance(Tensor a, Tensor b) {
        checkPair(a, b, name());
        List<Tensor> fa = net.run(a).maps();
        List<Tensor> fb;
        try (var ng = Grad.noGrad()) {
            fb = net.run(b.detach()).maps();
        }
        if (weights != null && weights.length != fa.size())
            throw new IllegalArgumentException("LpipsDistance: " + weights.length + " layer weights given, the network has "
                    + fa.size() + " feature layers");
        Tensor total = null;
        for (int l = 0; l < fa.size(); l++) {
            Tensor diff = Ops.sub(unitChannels(fa.get(l)), unitChannels(fb.get(l)));
            Tensor dl = Ops.mean(Ops.sum(Ops.mul(diff, diff), new int[]{1}, false)); // mean over (B, H, W) of the channel sum
            if (weights != null) dl = Ops.mulScalar(dl, weights[l]);
            total = total == null ? dl : Ops.add(total, dl);
        }
        return total;
    }

    /** (B, C, H, W) scaled to unit norm over C at every pixel. */
    static Tensor unitChannels(Tensor f) {
        Tensor norm = Ops.sqrt(Ops.addScalar(Ops.sum(Ops.mul(f, f), new int[]{1}, true), EPS)); // (B, 1, H, W)
        return Ops.div(f, norm);
    }

    static void checkPair(Tensor a, Tensor b, String who) {
        if (!a.sameShape(b))
            throw new IllegalArgumentException(who + ": a is " + Shape.str(a.shape()) + " but b is " + Shape.str(b.shape())
                    + "; both must be the same (B, C, H, W) image batch");
    }

    /** Freezes a network for use inside a loss; refuses the evaluation network. */
    static FeatureNet requireLossNet(FeatureNet net, String who) {
        if (net == null) throw new IllegalArgumentException(who + ": network is null");
        if (net.config.arch() == FeatureNetConfig.Arch.EVAL)
            throw new IllegalArgumentException(who + ": " + FashionNetEval.NAME + " grades the samples and must never be a loss "
                    + "(a metric must not be the loss it grades); use a fashion-convnet or fashion-convnext network");
        net.eval();
        net.requiresGrad(false);
        return net;
    }

    @Override
    public String toString() {
        return name() + "[" + net.config.arch().id + ", weights=" + (weights == null ? "uniform" : Arrays.toString(weights)) + "]";
    }
}
