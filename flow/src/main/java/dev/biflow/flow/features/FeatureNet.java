// The base of the project's own feature networks: a classifier whose intermediate features are exposed.
package dev.biflow.flow.features;

import dev.biflow.engine.Ops;
import dev.biflow.engine.Shape;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.Rng;
import dev.biflow.engine.nn.Conv2d;
import dev.biflow.engine.nn.Init;
import dev.biflow.engine.nn.LayerNorm;
import dev.biflow.engine.nn.Linear;
import dev.biflow.engine.nn.Module;

import java.util.List;

/**
 * A small image classifier trained by the project on the dataset (no pretrained vision network
 * can be downloaded here, see docs/ARCHITECTURE.md), whose features serve the perceptual distances and the
 * evaluation metrics. {@link #run} gives every intermediate the users need in one pass:
 * the per-layer feature maps (for the LPIPS-style distance), the penultimate features (for the
 * pooled-feature distance and the Frechet distance) and the logits.
 *
 * <p>Inputs are (B, C, H, W) images in [-1, 1], as {@code ImageDataset.batch} gives them.
 * {@link #forward} returns the logits, so a FeatureNet trains like any classifier
 * ({@link FeatureNetTrainer}).
 */
public abstract class FeatureNet extends Module {
    public final FeatureNetConfig config;

    /**
     * What one forward pass exposes.
     *
     * @param maps   feature maps (B, C_l, H_l, W_l) of the layers the LPIPS-style distance compares,
     *               shallow to deep (post-activation)
     * @param penultimate (B, D) the input of the last linear layer: the hidden fully connected layer
     *               (after its ReLU) of the conv nets, the globally pooled, LayerNormed last stage
     *               of the ConvNeXt-style net
     * @param logits (B, numClasses)
     */
    public record Features(List<Tensor> maps, Tensor penultimate, Tensor logits) {}

    protected FeatureNet(FeatureNetConfig config) { this.config = config; }

    /** The honest human-readable name of the network, for reports. */
    public abstract String displayName();

    /** One forward pass with its intermediates. */
    public abstract Features run(Tensor x);

    /** x (B, C, H, W) -> logits (B, numClasses). */
    @Override
    public Tensor forward(Tensor x) { return run(x).logits(); }

    /** Throws unless x is (B, inChannels, imgSize, imgSize). */
    protected final void checkInput(Tensor x) {
        int[] s = x.shape();
        if (s.length != 4 || s[1] != config.inChannels() || s[2] != config.imgSize() || s[3] != config.imgSize())
            throw new IllegalArgumentException(displayName() + " takes images (B, " + config.inChannels() + ", " + config.imgSize()
                    + ", " + config.imgSize() + "), got " + Shape.str(s));
    }

    // ---------------------------------------------------------------- helpers for the architectures

    /** He (Kaiming normal, fan-in, ReLU gain) weights and zero bias, for conv layers followed by ReLU. */
    static Conv2d heInit(Conv2d c, Rng rng) {
        Init.kaimingNormal(c.weight, rng, 0);
        if (c.bias != null) Init.zeros(c.bias);
        return c;
    }

    /**
     * The conv nets' classifier head: flatten (B, C, h, w) -> fc -> ReLU (the penultimate features)
     * -> head. A flattened head trains faster than global average pooling in these shallow,
     * normalisation-free nets (with pooling, FashionConvNet was at 67% training accuracy after 200
     * steps of 128 Fashion-MNIST images).
     */
    static Features fcHead(List<Tensor> maps, Tensor last, Linear fc, Linear head) {
        Tensor pen = Ops.relu(fc.forward(Ops.reshape(last, last.size(0), -1))); // (B, hidden)
        return new Features(maps, pen, head.forward(pen));
    }

    /** Side of the last map of a conv net: maxPool/stride-2 arithmetic applied stage by stage. */
    static int halve(int side, boolean stride2Conv) { return stride2Conv ? (side + 2 - 3) / 2 + 1 : side / 2; }

    /** Mean over the spatial axes: (B, C, H, W) -> (B, C). */
    static Tensor globalAvgPool(Tensor x) { return Ops.mean(x, new int[]{2, 3}, false); }

    /** LayerNorm over the channels of a (B, C, H, W) map (ConvNeXt's channels-first LayerNorm). */
    static Tensor channelNorm(LayerNorm ln, Tensor x) {
        return Ops.permute(ln.forward(Ops.permute(x, 0, 2, 3, 1)), 0, 3, 1, 2);
    }
}
