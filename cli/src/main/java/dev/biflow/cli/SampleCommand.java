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
public final class SampleCommand implements Callable<Integer> {
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
    @Option(names = "--out", description = "PNG grid to write; when --n images make a grid too large for one file"
            + " (over " + (MAX_GRID_BYTES >> 20) + " MB of pixels), grids of at most that size as OUT-00000.png, OUT-00001.png, ...") Path out = Path.of("samples.png");
    @Range(min = 1) @Option(names = "--batch", description = "Images sampled together (memory grows with it; any --n is sampled in batches).") int batch = 256;

    @Option(names = "--backward", description = "A BiFlow backward model: sample 1-NFE with it and put the exact inverse of the same z beside it.") Path backward;
    @Range(min = 0) @Option(names = "--w", description = "Guidance scale for BiFlow's one-pass (training-time) CFG.") float w = 1f;

    /**
     * A grid whose rows alternate BiFlow 1-NFE samples and exact-inverse samples (score-denoised,
     * guided with the same scale) from the same noise and labels: one column per class.
     */
    static Path compareGrid(dev.biflow.flow.inverse.FrozenFlow ff, dev.biflow.flow.inverse.BiFlowModel g, float sigma,
                            dev.biflow.flow.model.TarFlowConfig cfg, Path out, int perRow, float w, long seed) throws java.io.IOException {
        int rows = 2;
        int n = perRow * rows;
        int[] y = Common.labels("all", n, cfg.numClasses());
        Tensor eps = Tensor.randn(new Rng(seed), n, cfg.tokens(), cfg.tokenDim());
        Tensor xb;
        try (Common.DeviceSampler ds = Common.biflowSampler(ff, g, sigma, n, w)) {
            xb = ds.sampler().sample(eps, y, w);
        }
        Tensor xe = dev.biflow.flow.inverse.BiFlowSampler.exactInverse(ff, dev.biflow.flow.inverse.BackwardConfig.Denoise.SCORE, sigma).sample(eps, y, w);
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
            var loaded = dev.biflow.flow.inverse.BackwardCheckpoints.read(backward);
            long t0 = System.nanoTime();
            compareGrid(dev.biflow.flow.inverse.FrozenFlow.of(m), loaded.model(), loaded.sigma(), m.config, out, nrow, w, seed);
            System.out.printf(Locale.ROOT, "sample: BiFlow 1-NFE and exact-inverse rows from the same noise in %s -> %s%n",
                    Common.duration((System.nanoTime() - t0) / 1e9), out);
            return 0;
        }
        var c = m.config;
        sampling().check(m); // a bad --labels fails before any sampling
        // Bounded memory for any --n: batches of --batch images, each grid file at most MAX_GRID_BYTES of pixels
        // (and 1/8 of the memory budget); image i's noise depends only on the seed and i, so neither batching nor
        // grids (nor a cluster's shards: biflow spark sample) change the samples.
        int perGrid = perGrid(n, nrow, c.inChannels(), c.imgSize());
        int grids = (int) ((n + (long) perGrid - 1) / perGrid);
        Sampling sampling = sampling();
        long t0 = System.nanoTime();
        Path first = null, last = null;
        for (int gi = 0; gi < grids; gi++) {
            int inGrid = (int) Math.min(perGrid, n - (long) gi * perGrid);
            Tensor images = sampling.images(m, (long) gi * perGrid, inGrid);
            Path file = grids == 1 ? out : numbered(out, gi);
            ImageGrid.write(file, images, -1f, 1f, nrow, 2, 3);
            if (first == null) first = file;
            last = file;
        }
        double secs = (System.nanoTime() - t0) / 1e9;
        System.out.printf(Locale.ROOT, "sample: %d images in %s (%.1f ms/image) -> %s%n", n, Common.duration(secs), secs * 1000 / n,
                grids == 1 ? out : first + " .. " + last + " (" + grids + " grids of up to " + perGrid + " images)");
        return 0;
    }

    /** The checkpoint --model, the count --n, the grid width --nrow and --backward (null unless given). */
    public Path model() { return model; }

    public int n() { return n; }

    public int nrow() { return nrow; }

    public Path backward() { return backward; }

    /** Applies --threads, --device and --allow-nonfinite (a command that mixes this one in runs it first). */
    public void applyCommon() { common.apply(); }

    /** This command's settings as a value that can travel to another machine. */
    public Sampling sampling() { return new Sampling(labels, guidance, annealed, attnTemp, temperature, denoise, seed, batch); }

    /**
     * What {@code biflow sample} draws from a forward flow, as a value: the images it makes form one
     * sequence per seed, and any range of it can be drawn on its own, on any machine.
     */
    public record Sampling(String labels, float guidance, boolean annealed, float attnTemp, float temperature, float denoise, long seed,
                           int batch) implements java.io.Serializable {
        /** Fails, before any sampling, on --labels the model cannot take. */
        public void check(TarFlow m) { Common.labels(labels, 0, 1, m.config.numClasses()); }

        /**
         * Images [first, first + count) of the sequence, (count, C, H, W), sampled --batch at a time:
         * image i's noise is normals [i D, (i + 1) D) of {@code new Rng(seed)} (D = C H W, entered with
         * {@link Rng#skipNormals}), times the temperature, and its label is number i of --labels. The exact
         * inverse decodes each image on its own (per-row arithmetic, whatever the batch and thread count),
         * so a range drawn alone equals the same images drawn in one run, bit for bit.
         */
        public Tensor images(TarFlow m, long first, int count) {
            var c = m.config;
            Rng rng = new Rng(seed);
            rng.skipNormals(Math.multiplyExact(first, (long) c.dims()));
            float[] images = new float[Math.multiplyExact(count, c.dims())];
            for (int done = 0; done < count; ) {
                int b = Math.min(batch, count - done);
                int[] y = Common.labels(labels, first + done, b, c.numClasses());
                Tensor z = Tensor.randn(rng, b, c.tokens(), c.tokenDim()).mul(temperature);
                Tensor x = m.reverse(z, y, new TarFlow.Guidance(guidance, annealed, attnTemp));
                if (denoise > 0) x = m.denoise(x, y, denoise);
                System.arraycopy(x.data(), 0, images, done * c.dims(), b * c.dims());
                done += b;
            }
            return Tensor.of(images, count, c.inChannels(), c.imgSize(), c.imgSize());
        }
    }

    /** A grid file's pixels are at most this many bytes (a larger --n writes several files). */
    static final long MAX_GRID_BYTES = 64L << 20;

    /** Images per grid file: all n if their grid fits MAX_GRID_BYTES (and 1/8 of the memory budget), else whole rows that do. */
    public static int perGrid(int n, int nrow, int channels, int imgSize) {
        long cell = (long) (imgSize * 3 + 2) * (imgSize * 3 + 2) * (channels == 1 ? 1 : 4) + 4L * channels * imgSize * imgSize; // pixels + floats
        long cap = Math.min(MAX_GRID_BYTES, dev.biflow.engine.io.MemoryBudget.limit() / 8);
        long fit = Math.max(1, cap / cell);
        if (fit >= n) return n;
        int cols = Math.min(nrow, n);
        return (int) Math.max(cols, fit / cols * cols);
    }

    /** OUT-00012.png for grid 12 of out = OUT.png. */
    public static Path numbered(Path out, int i) {
        String name = out.getFileName().toString();
        int dot = name.lastIndexOf('.');
        String stem = dot > 0 ? name.substring(0, dot) : name, ext = dot > 0 ? name.substring(dot) : ".png";
        return out.resolveSibling(String.format(Locale.ROOT, "%s-%05d%s", stem, i, ext));
    }
}
