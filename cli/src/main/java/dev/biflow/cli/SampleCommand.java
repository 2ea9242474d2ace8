// biflow sample: exact-inverse samples from a forward flow, optionally guided and denoised, as a PNG grid.
package dev.biflow.cli;

import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.io.ImageGrid;
import dev.biflow.flow.model.Checkpoints;
import dev.biflow.flow.model.TarFlow;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

import java.nio.file.Path;
import java.util.Locale;
import java.util.concurrent.Callable;

@Command(name = "sample", mixinStandardHelpOptions = true, showDefaultValues = true, sortOptions = false,
        description = "Sample images with the exact inverse of a forward flow (token by token, KV cache).",
        footer = {"", "Examples:",
                "  biflow sample --model runs/forward/model.safetensors --n 40 --guidance 2 --out samples.png",
                "  biflow sample --model m.safetensors --labels 7 --n 16 --denoise 0.1"})
final class SampleCommand implements Callable<Integer> {
    @Mixin Common common;
    @Option(names = "--model", required = true, description = "Forward-model checkpoint (.safetensors).") Path model;
    @Range(min = 1) @Option(names = "--n", description = "Number of samples.") int n = 40;
    @Option(names = "--labels", description = "Class labels: 'all' (cycle through classes) or a list like 0,3,7.") String labels = "all";
    @Range(min = 0) @Option(names = "--guidance", description = "Classifier-free guidance scale (0 = none).") float guidance = 0;
    @Option(names = "--annealed", description = "Anneal guidance over tokens: g_i = (i+1)/(T-1) g.") boolean annealed;
    @Range(min = 0, minOpen = true) @Option(names = "--attn-temp", description = "Attention temperature of the unconditional pass.") float attnTemp = 1f;
    @Range(min = 0) @Option(names = "--temperature", description = "Noise temperature: z ~ N(0, t^2 var).") float temperature = 1f;
    @Range(min = 0) @Option(names = "--denoise", description = "Score-based denoising step with this sigma (0 = off; use the training sigma).") float denoise = 0;
    @Option(names = "--seed", description = "Noise seed.") long seed = 0;
    @Range(min = 1) @Option(names = "--nrow", description = "Images per row in the grid.") int nrow = 10;
    @Option(names = "--out", description = "PNG grid to write.") Path out = Path.of("samples.png");

    @Option(names = "--backward", description = "A BiFlow backward model: sample 1-NFE with it and put the exact inverse of the same z beside it.") Path backward;
    @Range(min = 0) @Option(names = "--w", description = "Guidance scale for BiFlow's one-pass (training-time) CFG.") float w = 1f;

    /**
     * A grid whose rows alternate BiFlow 1-NFE samples and exact-inverse samples (score-denoised,
     * guided with the same scale) from the same noise and labels: one column per class.
     */
    static Path compareGrid(dev.biflow.flow.backward.FrozenFlow ff, dev.biflow.flow.backward.BiFlowModel g, float sigma,
                            dev.biflow.flow.model.TarFlowConfig cfg, Path out, int perRow, float w, long seed) throws java.io.IOException {
        int rows = 2;
        int n = perRow * rows;
        int[] y = Common.labels("all", n, cfg.numClasses());
        Tensor eps = Tensor.randn(new Rng(seed), n, cfg.tokens(), cfg.tokenDim());
        Tensor xb;
        try (Common.DeviceSampler ds = Common.biflowSampler(ff, g, sigma, n, w)) {
            xb = ds.sampler().sample(eps, y, w);
        }
        Tensor xe = dev.biflow.flow.backward.BiFlowSampler.exactInverse(ff, dev.biflow.flow.backward.BackwardConfig.Denoise.SCORE, sigma).sample(eps, y, w);
        // interleave rows: biflow row r, exact row r, ...
        int d = cfg.dims();
        float[] all = new float[2 * n * d];
        for (int r = 0; r < rows; r++) {
            System.arraycopy(xb.data(), r * perRow * d, all, (2 * r) * perRow * d, perRow * d);
            System.arraycopy(xe.data(), r * perRow * d, all, (2 * r + 1) * perRow * d, perRow * d);
        }
        ImageGrid.write(out, Tensor.of(all, 2 * n, cfg.inChannels(), cfg.imgSize(), cfg.imgSize()), -1f, 1f, perRow, 2, 3);
        return out;
    }

    @Override
    public Integer call() throws Exception {
        common.apply();
        TarFlow m = Checkpoints.loadTarFlow(model);
        if (backward != null) {
            var loaded = dev.biflow.flow.backward.BackwardCheckpoints.read(backward);
            long t0 = System.nanoTime();
            compareGrid(dev.biflow.flow.backward.FrozenFlow.of(m), loaded.model(), loaded.sigma(), m.config, out, nrow, w, seed);
            System.out.printf(Locale.ROOT, "sample: BiFlow 1-NFE and exact-inverse rows from the same noise in %s -> %s%n",
                    Common.duration((System.nanoTime() - t0) / 1e9), out);
            return 0;
        }
        int[] y = Common.labels(labels, n, m.config.numClasses());
        Tensor z = Tensor.randn(new Rng(seed), n, m.config.tokens(), m.config.tokenDim()).mul(temperature);
        long t0 = System.nanoTime();
        Tensor x = m.reverse(z, y, new TarFlow.Guidance(guidance, annealed, attnTemp));
        if (denoise > 0) x = m.denoise(x, y, denoise);
        double secs = (System.nanoTime() - t0) / 1e9;
        ImageGrid.write(out, x, -1f, 1f, nrow, 2, 3);
        System.out.printf(Locale.ROOT, "sample: %d images in %s (%.1f ms/image) -> %s%n", n, Common.duration(secs), secs * 1000 / n, out);
        return 0;
    }
}
