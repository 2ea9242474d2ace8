// biflow demo: the main job. Samples the shipped Fashion-MNIST models both ways, grades and times them, writes a report.
package dev.biflow.cli;

import dev.biflow.flow.inverse.BackwardCheckpoints;
import dev.biflow.flow.inverse.BackwardTrainer;
import dev.biflow.flow.data.ImageDataset;
import dev.biflow.flow.features.FeatureNets;
import dev.biflow.flow.metrics.Metrics;
import dev.biflow.flow.model.Checkpoints;
import dev.biflow.flow.model.TarFlow;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;

@Command(name = "demo", mixinStandardHelpOptions = true, showDefaultValues = true, sortOptions = false,
        description = {"The main job. Loads the small pretrained Fashion-MNIST models shipped in models/fmnist (forward",
                "iTARFlow F, BiFlow backward model G, evaluation classifier), samples with the exact inverse of F",
                "(CFG + score denoising) and with G in one pass from the same noise and labels, times both, grades",
                "both (" + Metrics.FD_NAME + ", " + Metrics.CS_NAME + ", precision/recall, class consistency, with the",
                "real-data floor), reports F's test bits/dim, and writes runs/demo-<time>/report.html.",
                "With --from-scratch it first trains every model itself (evaluation network, F, G) in that folder."},
        footer = {"", "Examples:", "  biflow demo", "  biflow demo --samples 2000 --w 2",
                "  biflow demo --from-scratch            # about 25 minutes on 2 cores (--minutes of training, then the report)"})
final class DemoCommand implements Callable<Integer> {
    /** Where the pretrained models live (docs/MODELS.md says how each was made). */
    static final Path SHIPPED = Path.of("models", "fmnist");
    /** The guidance scale recorded in the shipped G (picked on held-out noise: docs/MODELS.md); --from-scratch's G gets it too. */
    static final float SHIPPED_G_W = 0.5f;
    static final String FORWARD_FILE = "forward.safetensors";
    static final String BACKWARD_FILE = "backward.safetensors";

    @Mixin Common common;
    @Option(names = "--models", description = "Folder with " + FORWARD_FILE + ", " + BACKWARD_FILE + " and " + FeatureNets.EVAL_FILE + ".")
    Path models = SHIPPED;
    @Option(names = "--from-scratch", description = "Train every model first (evaluation network, F, G), then run the same report.") boolean fromScratch;
    @Range(min = 0, minOpen = true) @Option(names = "--minutes", description = "With --from-scratch: total training budget; the evaluation "
            + "network may take 10%, F 45%, G what the two leave (each stops early at a checkpoint when its share runs out).") double minutes = 24;
    @Range(min = 1) @Option(names = "--samples", description = "Images per sampler (also the size of the real reference sets).") int samples = 1000;
    @Range(min = 0) @Option(names = "--bpd-images", description = "Test images for F's bits/dim.") int bpdImages = 2000;
    @Range(min = 0) @Option(names = "--w", description = "Guidance scale of the exact inverse, and of G unless --w-biflow or G's "
            + "recorded scale says otherwise (default 1).") Float w;
    @Range(min = 0) @Option(names = "--w-biflow", description = "Guidance scale of G (default: the scale recorded in G's checkpoint, "
            + "picked by a sweep on other noise; see docs/MODELS.md).") Float wBiflow;
    @Option(names = "--seed", description = "Noise seed.") long seed = 1;
    @Option(names = "--data", description = "Directory with MNIST-format IDX files.") Path data = ImageDataset.FASHION_MNIST_DIR;
    @Option(names = "--runs", description = "Parent folder of run folders.") Path runs = Path.of("runs");

    @Override
    public Integer call() throws Exception {
        common.apply();
        long t0 = System.nanoTime();
        Path dir = runs.resolve("demo-" + System.currentTimeMillis() / 1000);
        ImageDataset test = ImageDataset.loadIdx(data, "test"); // fail on a missing dataset before any work
        Path f, g, evalNet;
        if (fromScratch) {
            Path[] trained = trainAll(dir);
            f = trained[0];
            g = trained[1];
            evalNet = trained[2];
        } else {
            f = models.resolve(FORWARD_FILE);
            g = models.resolve(BACKWARD_FILE);
            evalNet = models.resolve(FeatureNets.EVAL_FILE);
            for (Path p : List.of(f, g, evalNet))
                if (!Files.exists(p))
                    throw new IllegalArgumentException("pretrained model " + p + " is missing: run from the project root (the models ship in "
                            + SHIPPED + "), pass --models DIR, or train everything with `biflow demo --from-scratch`");
        }
        TarFlow fm = Checkpoints.loadTarFlow(f);
        var gm = BackwardCheckpoints.read(g);
        Metrics metrics = Metrics.load(evalNet);
        ImageDataset train = ImageDataset.loadIdx(data, "train");
        System.out.printf(Locale.ROOT, "demo: F %s (%,d parameters), G %s (%,d parameters), grading with %s%n",
                f, fm.parameterCount(), g, gm.model().parameterCount(), evalNet);
        // each sampler at its own guidance scale, then both without guidance (the setting of the paper's ablations)
        var scales = SamplerEval.scales(w, wBiflow, null, true, gm);
        var r = SamplerEval.run(fm, gm, metrics, train, test,
                new SamplerEval.Settings(samples, 100, scales.get(0), scales.get(1), 0.1f, seed, bpdImages, 10), dir);
        EvalCommand.report(dir, r, "biflow demo" + (fromScratch ? " --from-scratch" : ""), EvalCommand.commandLine(spec));
        System.out.printf(Locale.ROOT, "demo: done in %s%n", Common.duration((System.nanoTime() - t0) / 1e9));
        return 0;
    }

    @picocli.CommandLine.Spec picocli.CommandLine.Model.CommandSpec spec;

    /** Trains the evaluation network, F and G inside dir; returns {F, G, eval net}. (G trains with MSE only, as the shipped G.) */
    private Path[] trainAll(Path dir) throws Exception {
        long t0 = System.nanoTime();
        Path features = dir.resolve("feature-nets");
        String threads = Integer.toString(dev.biflow.engine.kernels.Parallel.threads());
        run("train-features", "--arch", "eval", "--out", features.toString(), "--data", data.toString(), "--threads", threads,
                "--time-limit", fmt(minutes * 0.10));
        run("train-forward", "--name", "forward", "--runs", dir.toString(), "--data", data.toString(), "--threads", threads,
                "--patch", "4", "--width", "96", "--blocks", "4", "--layers", "1", "--head-dim", "32", "--sigma", "0.1",
                "--steps", "5000", "--batch", "32", "--lr", "2e-3", "--warmup", "100", "--ema", "0.995", "--seed", Long.toString(seed),
                "--checkpoint-every", "100", "--eval-images", "1000", "--time-limit", fmt(minutes * 0.45));
        Path f = dir.resolve("forward").resolve("model-ema.safetensors");
        run("train-backward", "--name", "backward", "--runs", dir.toString(), "--forward", f.toString(), "--data", data.toString(),
                "--threads", threads, "--perceptual", "none", "--w-max", "1.5", "--width", "96", // the shipped G's recipe (docs/MODELS.md)
                // steps matter more than width at this budget (docs/RESULTS.md, the tradeoff grid): G gets the time F left over
                "--layers-per-stage", "1", "--steps", "7000", "--batch", "32", "--lr", "1e-3", "--warmup", "50", "--ema", "0.995",
                "--checkpoint-every", "50", "--seed", Long.toString(seed),
                "--time-limit", fmt(Math.max(minutes * 0.10, minutes - (System.nanoTime() - t0) / 60e9)));
        // G's EMA weights with the shipped G's guidance scale recorded (CFG-trained G collapses in precision at w = 1,
        // the exact inverse's default; docs/RESULTS.md), as the shipped G is exported (docs/MODELS.md)
        Path gRun = dir.resolve("backward"), gEma = gRun.resolve(BackwardTrainer.EMA_FILE), g = gRun.resolve("backward-demo.safetensors");
        run("export", (Files.exists(gEma) ? gEma : gRun.resolve(BackwardTrainer.MODEL_FILE)).toString(), g.toString(),
                "--dtype", "f32", "--guidance-w", fmt(SHIPPED_G_W));
        return new Path[]{f, g, features.resolve(FeatureNets.EVAL_FILE)};
    }

    private static void run(String... args) {
        System.out.println("demo: biflow " + String.join(" ", args));
        int rc = Main.execute(args);
        if (rc != 0) throw new IllegalStateException("demo: `biflow " + String.join(" ", args) + "` failed (exit " + rc + "); see above");
    }

    private static String fmt(double m) { return String.format(Locale.ROOT, "%.2f", m); }
}
