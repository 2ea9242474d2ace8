// biflow train-forward: stage 1, maximum-likelihood training of the forward flow (TARFlow / iTARFlow).
package dev.biflow.cli;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.io.ImageGrid;
import dev.biflow.flow.data.ImageDataset;
import dev.biflow.flow.model.Checkpoints;
import dev.biflow.flow.model.NormControl;
import dev.biflow.flow.model.TarFlow;
import dev.biflow.flow.model.TarFlowConfig;
import dev.biflow.flow.train.Evaluation;
import dev.biflow.flow.train.ForwardTrainer;
import dev.biflow.flow.train.TrainConfig;
import me.tongfei.progressbar.ProgressBar;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

import java.io.BufferedWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Locale;
import java.util.concurrent.Callable;

@Command(name = "train-forward", mixinStandardHelpOptions = true, showDefaultValues = true, sortOptions = false,
        description = "Train the forward flow F (iTARFlow) by maximum likelihood on an MNIST-format dataset.",
        footer = {"", "Examples:",
                "  biflow train-forward --steps 2000 --name fmnist-p4",
                "  biflow train-forward --patch 2 --width 128 --blocks 4 --layers 2 --head-dim 32 --time-limit 60",
                "  biflow train-forward --resume runs/fmnist-p4        # continue a killed run exactly"})
final class TrainForwardCommand implements Callable<Integer> {
    @Mixin Common common;
    @picocli.CommandLine.Spec picocli.CommandLine.Model.CommandSpec spec;
    @Option(names = "--data", description = "Directory with MNIST-format IDX files.") Path data = ImageDataset.FASHION_MNIST_DIR;
    @Option(names = "--name", description = "Run name; the run folder is runs/<name>.") String name = "forward";
    @Option(names = "--runs", description = "Parent folder of run folders.") Path runs = Path.of("runs");
    @Option(names = "--resume", description = "Continue the run in this folder (same config).") Path resume;
    @Option(names = "--patch", description = "Patch size p.") int patch = 4;
    @Option(names = "--width", description = "Transformer width D.") int width = 128;
    @Option(names = "--blocks", description = "Flow blocks.") int blocks = 4;
    @Option(names = "--layers", description = "Attention layers per block.") int layers = 2;
    @Option(names = "--head-dim", description = "Attention head width.") int headDim = 32;
    @Option(names = "--unconditional", description = "Ignore labels.") boolean unconditional;
    @Option(names = "--norm-control", description = "none | hard | soft clipping of the affine params (iTARFlow).") String normControl = "soft";
    @Option(names = "--clip", description = "Norm-control bound c.") float clip = 4f;
    @Option(names = "--steps", description = "Optimizer steps.") long steps = 2000;
    @Option(names = "--batch", description = "Batch size.") int batch = 64;
    @Option(names = "--lr", description = "Peak learning rate.") double lr = 2e-3;
    @Option(names = "--warmup", description = "Warm-up steps (default: 5% of steps).") Long warmup;
    @Option(names = "--sigma", description = "Training noise std (images in [-1, 1]).") float sigma = 0.1f;
    @Option(names = "--grad-clip", description = "Global gradient-norm clip (0 = off).") double gradClip = 1.0;
    @Option(names = "--ema", description = "EMA decay of parameters (0 = off).") double ema = 0;
    @Option(names = "--label-dropout", description = "Probability of dropping a label (for guidance).") float labelDropout = 0.1f;
    @Option(names = "--seed", description = "Random seed (weights, data order, noise).") long seed = 0;
    @Option(names = "--checkpoint-every", description = "Checkpoint interval in steps.") long checkpointEvery = 200;
    @Option(names = "--time-limit", description = "Stop cleanly (with a checkpoint) after this many minutes (0 = none).") double timeLimit = 0;
    @Option(names = "--eval-images", description = "Test images for the final bits/dim.") int evalImages = 2000;
    @Option(names = "--max-bad-steps", description = "Consecutive NaN/Inf steps tolerated before stopping.") int maxBadSteps = 20;

    @Override
    public Integer call() throws Exception {
        common.apply();
        Path dir = resume != null ? resume : runs.resolve(name);
        ImageDataset train = ImageDataset.loadIdx(data, "train");
        TarFlowConfig cfg;
        if (resume != null) {
            cfg = Checkpoints.loadTarFlow(resume.resolve(ForwardTrainer.MODEL_FILE)).config;
        } else {
            if (Files.exists(dir.resolve(ForwardTrainer.MODEL_FILE)))
                throw new IllegalArgumentException("run folder " + dir + " already holds a model; pass --resume " + dir
                        + " to continue it or --name to start another run");
            int hd = Math.min(headDim, width);
            cfg = new TarFlowConfig(train.channels, train.height, patch, width, blocks, layers,
                    unconditional ? 0 : train.numClasses, hd, NormControl.parse(normControl), clip);
        }
        TrainConfig tc = new TrainConfig(steps, batch, lr, warmup != null ? warmup : Math.max(1, steps / 20), 1e-6, 1e-4,
                0.9, 0.95, gradClip, ema, sigma, labelDropout, seed, checkpointEvery, maxBadSteps);
        Files.createDirectories(dir);
        writeConfig(dir, cfg, tc);
        TarFlow model = new TarFlow(cfg, new Rng(seed));
        ForwardTrainer trainer = new ForwardTrainer(model, train, tc, dir);
        if (resume != null) trainer.resume(resume);
        System.out.printf(Locale.ROOT, "train-forward: %s, %,d parameters, %d tokens x %d, data %s (%d images), run folder %s%n",
                cfg.toJson(), model.parameterCount(), cfg.tokens(), cfg.tokenDim(), train.name, train.n, dir);
        long deadline = timeLimit > 0 ? System.nanoTime() + (long) (timeLimit * 60e9) : Long.MAX_VALUE;
        Path metrics = dir.resolve("metrics.jsonl");
        long t0 = System.nanoTime();
        final long[] skipped = {0};
        final double[] lastLoss = {Double.NaN};
        try (BufferedWriter mw = Files.newBufferedWriter(metrics, StandardOpenOption.CREATE, StandardOpenOption.APPEND);
             ProgressBar pb = Common.bar("train", steps, "step")) {
            pb.stepTo(trainer.step());
            ForwardTrainer.Listener l = new ForwardTrainer.Listener() {
                double ema = Double.NaN;

                @Override
                public void onStep(ForwardTrainer.StepStats s) {
                    if (s.skipped()) skipped[0]++;
                    else ema = Double.isNaN(ema) ? s.loss() : 0.98 * ema + 0.02 * s.loss();
                    lastLoss[0] = ema;
                    pb.stepTo(s.step());
                    pb.setExtraMessage(String.format(Locale.ROOT, "loss %.4f lr %.2e", ema, s.lr()));
                    try {
                        mw.write(String.format(Locale.ROOT, "{\"step\":%d,\"loss\":%s,\"lr\":%.6g,\"grad_norm\":%s,\"skipped\":%b,\"sec\":%.4f}%n",
                                s.step(), num(s.loss()), s.lr(), num(s.gradNorm()), s.skipped(), s.seconds()));
                        if (s.step() % 50 == 0) mw.flush();
                    } catch (java.io.IOException e) {
                        throw new java.io.UncheckedIOException(e);
                    }
                }
            };
            // train in slices so a time limit stops cleanly between steps, with a checkpoint
            while (trainer.step() < steps && System.nanoTime() < deadline)
                trainer.runUntil(Math.min(steps, trainer.step() + Math.max(1, checkpointEvery)), l);
        }
        double secs = (System.nanoTime() - t0) / 1e9;
        ImageDataset test = ImageDataset.loadIdx(data, "test");
        double bpd;
        try (ProgressBar pb = Common.bar("eval bits/dim", Math.min(evalImages, test.n), "img")) {
            bpd = Evaluation.bitsPerDim(model, test, evalImages, 100, seed + 1, pb::stepTo);
        }
        try (BufferedWriter mw = Files.newBufferedWriter(metrics, StandardOpenOption.APPEND)) {
            mw.write(String.format(Locale.ROOT, "{\"step\":%d,\"test_bpd\":%.5f,\"eval_images\":%d}%n", trainer.step(), bpd, Math.min(evalImages, test.n)));
        }
        Path grid = dir.resolve("samples.png");
        try (var ng = dev.biflow.engine.Grad.noGrad()) {
            int ns = 20;
            int[] ys = cfg.conditional() ? Common.labels("all", ns, cfg.numClasses()) : null;
            Tensor zs = Tensor.randn(new Rng(seed + 7), ns, cfg.tokens(), cfg.tokenDim());
            Tensor xs = model.reverse(zs, ys, cfg.conditional() ? new TarFlow.Guidance(1f, false, 1f) : TarFlow.Guidance.NONE);
            xs = model.denoise(xs, ys, sigma);
            ImageGrid.write(grid, xs, -1f, 1f, 10, 2, 3);
        }
        Path report = RunReport.write(dir, "train-forward " + dir.getFileName(), "biflow train-forward " + String.join(" ", spec.commandLine().getParseResult().originalArgs()),
                java.util.Map.of("steps", Long.toString(trainer.step()), "wall time", Common.duration(secs),
                        "final loss (smoothed)", String.format(Locale.ROOT, "%.4f", lastLoss[0]),
                        "test bits/dim", String.format(Locale.ROOT, "%.4f (%d images)", bpd, Math.min(evalImages, test.n)),
                        "skipped steps", Long.toString(skipped[0]), "samples", "samples.png: exact inverse, guidance 1, denoised"));
        System.out.printf(Locale.ROOT, "train-forward: done %d steps in %s (%d skipped), loss %.4f, test bits/dim %.4f (%d images); model %s; report %s%n",
                trainer.step(), Common.duration(secs), skipped[0], lastLoss[0], bpd, Math.min(evalImages, test.n), dir.resolve(ForwardTrainer.MODEL_FILE), report);
        return 0;
    }

    private static String num(double v) { return Double.isFinite(v) ? String.format(Locale.ROOT, "%.6g", v) : "null"; }

    private void writeConfig(Path dir, TarFlowConfig cfg, TrainConfig tc) throws java.io.IOException {
        ObjectMapper om = new ObjectMapper();
        ObjectNode o = om.createObjectNode();
        o.set("model", om.readTree(cfg.toJson()));
        o.set("train", om.valueToTree(tc));
        o.put("data", data.toString());
        Files.writeString(dir.resolve("config.json"), om.writerWithDefaultPrettyPrinter().writeValueAsString(o));
    }
}
