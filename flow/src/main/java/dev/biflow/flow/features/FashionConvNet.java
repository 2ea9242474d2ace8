// FashionConvNet: a small VGG-like classifier whose ReLU maps feed the LPIPS-style distance.
package dev.biflow.flow.features;

import dev.biflow.engine.Fused;
import dev.biflow.engine.Ops;
import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.nn.Conv2d;
import dev.biflow.engine.nn.Linear;
import dev.biflow.engine.nn.ModuleList;

import java.util.ArrayList;
import java.util.List;

/**
 * The network behind {@link LpipsDistance}, in the role VGG plays for LPIPS: stages of
 * conv3x3 (padding 1) + ReLU, 2x2 max-pooling between stages, then VGG's kind of classifier:
 * flatten, a hidden fully connected layer with ReLU, a linear layer. The default
 * ({@link FeatureNetConfig#convnetDefault()}) is 1 -> 32 (28x28) -> pool -> 64 (14x14) -> pool ->
 * 128 (7x7) -> 128 -> 10, about 0.9 M parameters (0.8 M of them in the first FC layer).
 *
 * <p>Convolutions start from He (Kaiming normal) init with zero bias, which keeps the activation
 * scale through the ReLUs of this normalisation-free net; PyTorch's default init shrinks it at every
 * layer and made training several times slower.
 *
 * <p>Feature maps for the distance: the output of every ReLU, as LPIPS takes VGG's relu
 * outputs. Parameter names: {@code convs.i.{weight,bias}} in order, {@code fc}, {@code head}.
 */
public final class FashionConvNet extends FeatureNet {
    private final ModuleList<Conv2d> convs = new ModuleList<>();
    /** Whether a 2x2 max-pool follows conv i (the last conv of every stage but the last). */
    private final boolean[] poolAfter;
    public final Linear fc, head;

    public FashionConvNet(FeatureNetConfig config, Rng rng) {
        super(config);
        if (config.arch() != FeatureNetConfig.Arch.CONVNET)
            throw new IllegalArgumentException("FashionConvNet needs a " + FeatureNetConfig.Arch.CONVNET.id + " config, got " + config.arch().id);
        List<Boolean> pools = new ArrayList<>();
        int in = config.inChannels();
        for (int s = 0; s < config.stages(); s++) {
            int w = config.widths().get(s);
            for (int d = 0; d < config.depths().get(s); d++) {
                convs.add(heInit(new Conv2d(in, w, 3, 1, 1, true, rng), rng));
                pools.add(d == config.depths().get(s) - 1 && s < config.stages() - 1);
                in = w;
            }
        }
        poolAfter = new boolean[pools.size()];
        for (int i = 0; i < poolAfter.length; i++) poolAfter[i] = pools.get(i);
        registerModule("convs", convs);
        int side = config.imgSize();
        for (int s = 1; s < config.stages(); s++) side = halve(side, false);
        fc = registerModule("fc", new Linear(in * side * side, config.hidden(), true, rng));
        head = registerModule("head", new Linear(config.hidden(), config.numClasses(), true, rng));
    }

    @Override
    public String displayName() { return "FashionConvNet (LPIPS-style feature network, trained on Fashion-MNIST)"; }

    @Override
    public Features run(Tensor x) {
        checkInput(x);
        List<Tensor> maps = new ArrayList<>();
        Tensor h = x;
        for (int i = 0; i < convs.size(); i++) {
            h = Ops.relu(convs.get(i).forward(h)); // (B, C_i, H_i, W_i)
            maps.add(h);
            if (poolAfter[i]) h = Fused.maxPool2d(h, 2, 2);
        }
        return fcHead(maps, h, fc, head);
    }
}
