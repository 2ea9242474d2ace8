// biflow eval: bits/dim of a forward flow and sample metrics (FD-FashionNet etc.) and cost of each sampler.
package dev.biflow.cli;

import dev.biflow.flow.inverse.BackwardCheckpoints;
import dev.biflow.flow.data.ImageDataset;
import dev.biflow.flow.features.FeatureNets;
import dev.biflow.flow.metrics.Metrics;
import dev.biflow.flow.model.Checkpoints;
import dev.biflow.flow.model.TarFlow;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;

@Command(name = "eval", mixinStandardHelpOptions = true, showDefaultValues = true, sortOptions = false,
        description = {"Evaluate a forward flow F and, with --backward, its BiFlow model G:",
                "test bits/dim of F; then samples from the same noise and labels with the exact inverse of F",
                "(CFG + score denoising, as TARFlow samples) and with G in one pass, each timed (NFE, ms/image,",
                "images/s) and graded by the evaluation classifier: " + Metrics.FD_NAME + " (Frechet distance of its",
                "features; not Inception FID), " + Metrics.CS_NAME + " (Inception-Score formula on its softmax),",
                "precision/recall (k-NN manifolds) and class consistency; plus the same metrics for real test",
                "images vs the training subset (the floor). Writes eval.jsonl, a sample grid and report.html."},
        footer = {"", "Examples:",
                "  biflow eval --model models/fmnist/forward.safetensors --backward models/fmnist/backward.safetensors",
                "  biflow eval --model runs/forward/model-ema.safetensors --samples 0          # bits/dim only",
                "  biflow eval --model runs/forward/model-ema.safetensors --bpd-images 0 --samples 2000 --w 2",
                "  biflow eval --model F --backward G --n 0 --seed 2 --w-sweep 0,0.25,0.5,0.75,1,1.5   # pick each sampler's w"})
public final class EvalCommand implements Callable<Integer> {
    @Mixin Common common;
    @picocli.CommandLine.Spec picocli.CommandLine.Model.CommandSpec spec;
    @Option(names = "--model", required = true, description = "Forward-model checkpoint.") Path model;
    @Option(names = "--backward", description = "BiFlow backward-model checkpoint (adds the 1-NFE sampler).") Path backward;
    @Option(names = "--eval-net", description = "FashionNet-eval checkpoint (biflow train-features --arch eval).")
    Path evalNet = DemoCommand.SHIPPED.resolve(FeatureNets.EVAL_FILE);
    @Option(names = "--data", description = "Directory with MNIST-format IDX files.") Path data = ImageDataset.FASHION_MNIST_DIR;
    @Range(min = 0) @Option(names = {"--bpd-images", "--n"}, description = "Test images for bits/dim (0 = skip).") int bpdImages = 10000;
    @Range(min = 0) @Option(names = "--samples", description = "Images per sampler for the sample metrics (0 = bits/dim only); also the size of the real reference sets.") int samples = 1000;
    @Range(min = 1) @Option(names = "--batch", description = "Images sampled together.") int batch = 100;
    @Range(min = 0) @Option(names = "--w", description = "Guidance scale of the exact inverse (two-pass CFG of F), and of G unless "
            + "--w-biflow or G's recorded scale says otherwise (default 1).") Float w;
    @Range(min = 0) @Option(names = "--w-biflow", description = "Guidance scale of G (trained in; default: the scale recorded in G's "
            + "checkpoint by `biflow export --guidance-w`, else --w).") Float wBiflow;
    @Option(names = "--w-sweep", split = ",", paramLabel = "W,W,...", description = "Grade both samplers at every one of these scales "
            + "(writes guidance.png and names each sampler's best); pick a scale on another --seed than the one you report.") List<Float> sweep;
    @Option(names = "--unguided", description = "Also grade both samplers at w = 0 (the paper's ablations are without guidance).") boolean unguided;
    @Range(min = 0) @Option(names = "--sigma", description = "Training noise of F, for score denoising (taken from the backward checkpoint when given).") float sigma = 0.1f;
    @Option(names = "--seed", description = "Noise seed (samples, dequantisation, reference subset).") long seed = 1;
    @Option(names = "--out", description = "Folder for eval.jsonl, the grid and report.html (default runs/eval-<time>).") Path out;

    @Override
    public Integer call() throws Exception { return run(null); }

    /** The checkpoints this evaluation reads: F, G (null without --backward), the evaluation network. */
    public Path model() { return model; }

    public Path backward() { return backward; }

    public Path evalNet() { return evalNet; }

    /** The evaluation, with each sampler's images drawn by spread (null: here). */
    public Integer run(SamplerEval.Spread spread) throws Exception {
        common.apply();
        if (samples < 0 || batch < 1 || bpdImages < 0) throw new IllegalArgumentException("--samples, --bpd-images must be >= 0 and --batch >= 1");
        TarFlow f = Checkpoints.loadTarFlow(model);
        var g = backward == null ? null : BackwardCheckpoints.read(backward);
        ImageDataset test = ImageDataset.loadIdx(data, "test");
        ImageDataset train = samples > 0 ? ImageDataset.loadIdx(data, "train") : null;
        if (samples > 0 && !Files.exists(evalNet))
            throw new IllegalArgumentException("evaluation network " + evalNet + " not found: train one with `biflow train-features --arch eval`"
                    + " and pass --eval-net, or use --samples 0 for bits/dim only");
        Path dir = out != null ? out : Path.of("runs", "eval-" + System.currentTimeMillis() / 1000);
        var scales = SamplerEval.scales(w, wBiflow, sweep, unguided, g);
        var settings = new SamplerEval.Settings(samples, batch, scales.get(0), scales.get(1), sigma, seed, bpdImages, 10);
        if (sweep != null && sweep.size() > 1 && samples == 0) throw new IllegalArgumentException("--w-sweep grades samples: give --samples > 0");
        if (samples == 0) {
            var r = SamplerEval.run(f, g, null, null, test, settings, null);
            System.out.printf(Locale.ROOT, "eval: test bits/dim %.4f over %d images of %s%n", r.bitsPerDim(), r.bpdImages(), test.name);
            return 0;
        }
        Metrics metrics = Metrics.load(evalNet);
        checkSampleMemory(samples, batch, f.config.dims(), metrics.net().config.featureDim() + metrics.net().config.numClasses());
        var r = SamplerEval.run(f, g, metrics, train, test, settings, dir, spread);
        report(dir, r, spread == null ? "biflow eval" : "biflow spark eval", commandLine(spec));
        if (sweep != null && sweep.size() > 1)
            for (SamplerEval.Row b : SamplerEval.bestPerSampler(r.rows()))
                System.out.printf(Locale.ROOT, "best of the sweep: %s (%s %.3f)%n", b.sampler(), Metrics.FD_NAME, b.report().fd());
        return 0;
    }

    /**
     * The sample metrics cannot stream: Frechet distance, precision/recall (k-NN manifolds of all
     * samples) and class consistency need every sample's features at once, and the grid and timing
     * keep the samples. So --samples is refused up front, with the largest count that fits, when the
     * samples (noise, images, one copy while joining batches) and their features would not fit the
     * memory budget; --batch only bounds the sampler's own working memory.
     */
    static void checkSampleMemory(int samples, int batch, int dims, int featureValues) {
        long perSample = 4L * (3L * dims + featureValues) + 8;
        long need = perSample * samples;
        if (dev.biflow.engine.io.MemoryBudget.fits(need)) return;
        long max = Math.max(0, dev.biflow.engine.io.MemoryBudget.limit() / perSample);
        throw new IllegalArgumentException("--samples " + samples + " is too many for this heap: the sample metrics (" + Metrics.FD_NAME
                + ", precision/recall over all pairs, class consistency) need every sample and its features in memory at once, "
                + dev.biflow.engine.io.MemoryBudget.tooLarge(samples + " samples of " + dims + " values", need)
                + "; or use --samples " + max + " or fewer");
    }

    /** The command as the user typed it ({@code originalArgs} already starts with the subcommand's name). */
    static String commandLine(picocli.CommandLine.Model.CommandSpec spec) {
        return "biflow " + String.join(" ", spec.commandLine().getParseResult().originalArgs());
    }

    /** Prints the table and summary, writes report.html, and prints its path. */
    static void report(Path dir, SamplerEval.Result r, String title, String command) throws java.io.IOException {
        System.out.println();
        System.out.print(r.tableText());
        r.summary().forEach((k, v) -> System.out.println(k + ": " + v));
        Path html = RunReport.write(dir, title, command, r.summary(), r.table());
        System.out.println("report: " + html.toAbsolutePath());
    }
}
