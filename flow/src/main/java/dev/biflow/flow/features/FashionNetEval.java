// FashionNet-eval: a residual conv classifier used only by the evaluation metrics, never as a loss.
package dev.biflow.flow.features;

import dev.biflow.engine.Fused;
import dev.biflow.engine.Ops;
import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.nn.Conv2d;
import dev.biflow.engine.nn.Module;
import dev.biflow.engine.nn.ModuleList;

import java.util.ArrayList;
import java.util.List;

/**
 * "FashionNet-eval": the evaluation network of the metrics package (FD-FashionNet, the
 * classifier score, precision/recall, class consistency). It plays Inception-v3's role in FID
 * but is a small network trained here on Fashion-MNIST, so its numbers are comparable only to
 * numbers from the same checkpoint and never to published FIDs. A metric must not be the loss it
 * grades, so this architecture differs from both perceptual networks and
 * {@link LpipsDistance}/{@link PooledFeatureDistance} refuse it.
 *
 * <p>Layout: conv3x3 stem + ReLU at full resolution, 2x2 max-pool; stage s at width w_s: (for
 * s > 0 a stride-2 conv3x3 + ReLU) then residual blocks relu(x + conv(relu(conv(x)))) (no
 * normalisation layers; convs start from He init with zero bias, the second conv of each block
 * scaled by 0.1 so that a block begins near the identity). The head flattens the last map into a
 * hidden fully connected layer with ReLU, whose activations ({@code hidden}, 128 by default) are the
 * penultimate features of the metrics, then a linear layer gives the logits. The default
 * ({@link FeatureNetConfig#evalDefault()}): 32 (14x14) and 64 (7x7), 3136 -> 128 -> 10, about
 * 0.51 M parameters (widths 48 and 96 cost about twice the CPU time per step, too much for a
 * few-minute budget on 2 cores).
 *
 * <p>Names: {@code stem}, {@code down.i}, {@code stages.s.b.{conv1,conv2}}, {@code fc}, {@code head}.
 */
public final class FashionNetEval extends FeatureNet {
    /** The name reports use for this network. */
    public static final String NAME = "FashionNet-eval";

    /** Scale of the second conv of each residual block at init (so a block starts near the identity). */
    static final float RESIDUAL_INIT = 0.1f;

    static final class ResBlock extends Module {
        final Conv2d conv1, conv2;

        ResBlock(int c, Rng rng) {
            conv1 = registerModule("conv1", heInit(new Conv2d(c, c, 3, 1, 1, true, rng), rng));
            conv2 = registerModule("conv2", heInit(new Conv2d(c, c, 3, 1, 1, true, rng), rng));
            float[] w = conv2.weight.data();
            for (int i = 0; i < w.length; i++) w[i] *= RESIDUAL_INIT;
        }

        @Override
        public Tensor forward(Tensor x) {
            return Ops.relu(Ops.add(x, conv2.forward(Ops.relu(conv1.forward(x)))));
        }
    }

    public final Conv2d stem;
    private final ModuleList<Conv2d> down = new ModuleList<>();
    private final ModuleList<ModuleList<ResBlock>> stages = new ModuleList<>();
    public final dev.biflow.engine.nn.Linear fc, head;

    public FashionNetEval(FeatureNetConfig config, Rng rng) {
        super(config);
        if (config.arch() != FeatureNetConfig.Arch.EVAL)
            throw new IllegalArgumentException("FashionNetEval needs a " + FeatureNetConfig.Arch.EVAL.id + " config, got " + config.arch().id);
        List<Integer> w = config.widths();
        stem = registerModule("stem", heInit(new Conv2d(config.inChannels(), w.get(0), 3, 1, 1, true, rng), rng));
        for (int s = 0; s < config.stages(); s++) {
            if (s > 0) down.add(heInit(new Conv2d(w.get(s - 1), w.get(s), 3, 2, 1, true, rng), rng));
            ModuleList<ResBlock> blocks = new ModuleList<>();
            for (int b = 0; b < config.depths().get(s); b++) blocks.add(new ResBlock(w.get(s), rng));
            stages.add(blocks);
        }
        registerModule("down", down);
        registerModule("stages", stages);
        int side = halve(config.imgSize(), false);
        for (int s = 1; s < config.stages(); s++) side = halve(side, true);
        fc = registerModule("fc", new dev.biflow.engine.nn.Linear(config.lastWidth() * side * side, config.hidden(), true, rng));
        head = registerModule("head", new dev.biflow.engine.nn.Linear(config.hidden(), config.numClasses(), true, rng));
    }

    @Override
    public String displayName() { return NAME + " (residual conv classifier for evaluation metrics, trained on Fashion-MNIST)"; }

    @Override
    public Features run(Tensor x) {
        checkInput(x);
        List<Tensor> maps = new ArrayList<>();
        Tensor h = Ops.relu(stem.forward(x)); // (B, w0, H, W)
        maps.add(h);
        h = Fused.maxPool2d(h, 2, 2);
        for (int s = 0; s < stages.size(); s++) {
            if (s > 0) h = Ops.relu(down.get(s - 1).forward(h));
            for (ResBlock b : stages.get(s)) h = b.forward(h);
            maps.add(h);
        }
        return fcHead(maps, h, fc, head);
    }
}
