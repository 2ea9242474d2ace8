// Example: load a forward flow F and its learned BiFlow inverse G, sample class-conditional images in one pass (1-NFE), write a PNG grid.
package dev.biflow.samples;

import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.io.ImageGrid;
import dev.biflow.flow.inverse.BackwardCheckpoints;
import dev.biflow.flow.inverse.BackwardConfig;
import dev.biflow.flow.inverse.BiFlowModel;
import dev.biflow.flow.inverse.BiFlowSampler;
import dev.biflow.flow.inverse.FrozenFlow;
import dev.biflow.flow.model.Checkpoints;
import dev.biflow.flow.model.TarFlow;
import dev.biflow.flow.model.TarFlowConfig;

import java.io.FileNotFoundException;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/**
 * <b>What it shows.</b> Sampling with a trained BiFlow pair:
 * <ol>
 *   <li>{@link Checkpoints#loadTarFlow} loads the forward flow F (an iTARFlow; the config travels
 *       in the safetensors metadata, so no sizes are passed);</li>
 *   <li>{@link BackwardCheckpoints#read} loads the backward model G with its metadata (the training
 *       noise sigma, F's config at training time);</li>
 *   <li>{@link FrozenFlow#of} wraps F and {@link BiFlowSampler#of} pairs it with G (it checks that
 *       G's token geometry, stages and classes fit F);</li>
 *   <li>standard-normal noise eps of shape (B, T, C p^2), class labels and a guidance scale w go in;
 *       {@link BiFlowSampler#sample} returns images (B, C, H, W) in [-1, 1] after one network
 *       evaluation of G (two for two-pass CFG): no serial token-by-token inverse of F;</li>
 *   <li>{@link ImageGrid#write} tiles them into a PNG, one class per column.</li>
 * </ol>
 *
 * <p><b>How to run</b> (from the repository root):
 * <pre>
 *   samples/run.sh SampleBiFlow                                  # models/fmnist/forward.safetensors + backward.safetensors
 *   samples/run.sh SampleBiFlow F.safetensors G.safetensors      # your own pair (biflow train-forward / train-backward)
 *   samples/run.sh SampleBiFlow F G --w 2 --n 40 --seed 3 --out grid.png
 * </pre>
 * Options: {@code --out} PNG path (default biflow-samples.png), {@code --n} images (default 2 per
 * class), {@code --w} guidance scale (default 1 when G was trained with CFG, else 0), {@code --seed},
 * {@code --nrow} images per grid row (default: the number of classes), {@code --scale} pixel
 * enlargement (default 3). For BiFlow next to F's exact inverse from the same noise use
 * {@code biflow sample --model F --backward G}.
 */
public final class SampleBiFlow {
    private SampleBiFlow() {}

    /** Where the shipped Fashion-MNIST pair lives, relative to the repository root. */
    public static final Path DEFAULT_FORWARD = Path.of("models", "fmnist", "forward.safetensors");
    public static final Path DEFAULT_BACKWARD = Path.of("models", "fmnist", "backward.safetensors");

    /**
     * What to sample.
     *
     * @param n     images (labels cycle through the classes: 0, 1, .., K-1, 0, ..)
     * @param w     guidance scale; NaN picks the default (1 for a CFG-trained G, else 0)
     * @param nrow  images per grid row; 0 = the number of classes (one class per column)
     * @param scale nearest-neighbour enlargement of each image in the PNG
     */
    public record Options(Path forward, Path backward, Path out, int n, float w, long seed, int nrow, int scale) {
        public static Options defaults() {
            return new Options(DEFAULT_FORWARD, DEFAULT_BACKWARD, Path.of("biflow-samples.png"), 0, Float.NaN, 0, 0, 3);
        }
    }

    /** What {@link #run} did: the PNG and its size in pixels, the labels and w used, G's evaluations and the time. */
    public record Result(Path png, int width, int height, int[] labels, float w, long evaluations, double seconds) {}

    public static Result run(Options o, PrintStream log) throws IOException {
        requireCheckpoints(o.forward(), o.backward());

        // 1. The forward flow F and the backward model G, each rebuilt from the config in its file.
        TarFlow f = Checkpoints.loadTarFlow(o.forward());
        BackwardCheckpoints.Loaded loaded = BackwardCheckpoints.read(o.backward());
        BiFlowModel g = loaded.model();
        TarFlowConfig fc = f.config;
        log.printf(Locale.ROOT, "F: %s (%,d parameters)%n", fc.toJson(), f.parameterCount());
        log.printf(Locale.ROOT, "G: %s, cfg %s, denoise %s (%,d parameters)%n",
                g.config.strategy(), g.config.cfg(), g.config.denoise(), g.parameterCount());
        String trainedWith = loaded.forwardConfig();
        if (trainedWith != null && !TarFlowConfig.fromJson(trainedWith).equals(fc))
            log.println("warning: G was trained against a different forward config: " + trainedWith);

        // 2. The sampler: F frozen (never written), G, and the training noise sigma (used by score denoising only).
        BiFlowSampler sampler = BiFlowSampler.of(FrozenFlow.of(f), g, loaded.sigma());

        // 3. Noise, labels and guidance scale.
        int classes = fc.numClasses();
        int n = o.n() > 0 ? o.n() : 2 * Math.max(classes, 5);
        int[] labels = null; // null = unconditional
        if (classes > 0) {
            labels = new int[n];
            for (int i = 0; i < n; i++) labels[i] = i % classes;
        }
        float w = Float.isNaN(o.w()) ? (g.config.cfg() == BackwardConfig.Cfg.NONE || classes == 0 ? 0f : 1f) : o.w();
        Tensor eps = Tensor.randn(new Rng(o.seed()), n, fc.tokens(), fc.tokenDim()); // (B, T, C p^2)

        // 4. One pass of G (sample() runs under Grad.noGrad() itself).
        g.resetEvaluations();
        long t0 = System.nanoTime();
        Tensor x = sampler.sample(eps, labels, w); // (B, C, H, W), values in about [-1, 1]
        double seconds = (System.nanoTime() - t0) / 1e9;
        long evals = g.evaluations();
        log.printf(Locale.ROOT, "sampled %d images with w = %.2f in %.2f s (a cold JVM: includes JIT warm-up): "
                + "%d network evaluation(s) of G for the whole batch%n", n, w, seconds, evals);

        // 5. The grid: nrow images per row, 2 px padding, each image enlarged `scale` times.
        int nrow = o.nrow() > 0 ? o.nrow() : (classes > 0 ? classes : 10);
        ImageGrid.write(o.out(), x, -1f, 1f, nrow, 2, o.scale());
        int cols = Math.min(nrow, n), rows = (n + cols - 1) / cols;
        int width = cols * (fc.imgSize() * o.scale() + 2) + 2, height = rows * (fc.imgSize() * o.scale() + 2) + 2;
        log.printf(Locale.ROOT, "wrote %s (%dx%d px, %d rows of %d)%n", o.out(), width, height, rows, cols);
        return new Result(o.out(), width, height, labels, w, evals, seconds);
    }

    /** Throws a FileNotFoundException naming every missing checkpoint and how to pass the files. */
    static void requireCheckpoints(Path forward, Path backward) throws FileNotFoundException {
        List<String> missing = new ArrayList<>();
        if (!Files.isRegularFile(forward)) missing.add("forward checkpoint (F) " + forward.toAbsolutePath());
        if (!Files.isRegularFile(backward)) missing.add("backward checkpoint (G) " + backward.toAbsolutePath());
        if (missing.isEmpty()) return;
        throw new FileNotFoundException("not found: " + String.join(" and ", missing) + ".\n"
                + "Pass the two files: samples/run.sh SampleBiFlow FORWARD.safetensors BACKWARD.safetensors\n"
                + "(the shipped Fashion-MNIST pair is " + DEFAULT_FORWARD + " and " + DEFAULT_BACKWARD
                + "; train your own with `./biflow train-forward` and `./biflow train-backward --forward F`)");
    }

    /** Parses [FORWARD [BACKWARD]] and --out/--n/--w/--seed/--nrow/--scale VALUE. */
    static Options parse(String[] args) {
        Options d = Options.defaults();
        Path forward = d.forward(), backward = d.backward(), out = d.out();
        int n = d.n(), nrow = d.nrow(), scale = d.scale();
        float w = d.w();
        long seed = d.seed();
        int positional = 0;
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            if (a.startsWith("--")) {
                if (i + 1 >= args.length) throw new IllegalArgumentException("option " + a + " needs a value");
                String v = args[++i];
                switch (a) {
                    case "--out" -> out = Path.of(v);
                    case "--n" -> n = Integer.parseInt(v);
                    case "--w" -> w = Float.parseFloat(v);
                    case "--seed" -> seed = Long.parseLong(v);
                    case "--nrow" -> nrow = Integer.parseInt(v);
                    case "--scale" -> scale = Integer.parseInt(v);
                    default -> throw new IllegalArgumentException("unknown option " + a + "; use --out, --n, --w, --seed, --nrow, --scale");
                }
            } else if (positional == 0) {
                forward = Path.of(a);
                positional++;
            } else if (positional == 1) {
                backward = Path.of(a);
                positional++;
            } else {
                throw new IllegalArgumentException("unexpected argument '" + a + "'; usage: SampleBiFlow [FORWARD [BACKWARD]] [--out PNG] [--n N] [--w W] [--seed S]");
            }
        }
        return new Options(forward, backward, out, n, w, seed, nrow, scale);
    }

    public static void main(String[] args) throws IOException {
        Options o;
        try {
            o = parse(args);
        } catch (IllegalArgumentException e) {
            System.err.println("SampleBiFlow: " + e.getMessage());
            System.exit(2);
            return;
        }
        try {
            run(o, System.out);
        } catch (FileNotFoundException | IllegalArgumentException e) {
            // missing files, or a request the models cannot serve (e.g. w above G's trained range): the message says which
            System.err.println("SampleBiFlow: " + e.getMessage());
            System.exit(1);
        }
    }
}
