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
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Set;
import java.util.concurrent.Callable;

@Command(name = "train-forward", mixinStandardHelpOptions = true, showDefaultValues = true, sortOptions = false,
        description = {"Train the forward flow F (iTARFlow) by maximum likelihood on an MNIST-format dataset.",
                "Settings: flags > --config FILE > the defaults below; the run folder gets them all as config.json."},
        footer = {"", "Examples:",
                "  biflow train-forward --steps 2000 --name fmnist-p4",
                "  biflow train-forward --patch 2 --width 128 --blocks 4 --layers 2 \\",
                "      --head-dim 32 --time-limit 60",
                "  # continue a killed run exactly, with its saved settings:",
                "  biflow train-forward --resume runs/fmnist-p4",
                "  # extend it (the cosine learning-rate schedule is stretched):",
                "  biflow train-forward --resume runs/fmnist-p4 --steps 4000",
                "  # repeat it with another seed:",
                "  biflow train-forward --config runs/fmnist-p4/config.json \\",
                "      --name fmnist-seed2 --seed 2",
                "",
                "Config file: the format of runs/<name>/config.json; every key is optional,",
                "an unknown key is an error. model.in_channels and img_size must match the data;",
                "model.num_classes 0 means --unconditional.",
                "  {\"model\": {\"patch_size\": 4, \"channels\": 128, \"num_blocks\": 4,",
                "             \"layers_per_block\": 2, \"head_dim\": 32, \"num_classes\": 10,",
                "             \"norm_control\": \"soft\", \"clip\": 4.0},",
                "   \"train\": {\"steps\": 2500, \"batchSize\": 64, \"lr\": 0.002,",
                "             \"warmupSteps\": 100, \"emaDecay\": 0.999, \"seed\": 1, ...},",
                "   \"data\": \"/usr/share/datasets/fashion-mnist\"}"})
final class TrainForwardCommand implements Callable<Integer>, ConfigFile.Configurable {
    /** Options a resumed run may change: they do not alter what the run computes, or (--steps) extend it. */
    static final Set<String> RUN_TIME = new LinkedHashSet<>(List.of("--steps", "--checkpoint-every", "--time-limit", "--eval-images", "--threads", "--device"));

    /** The run's --eval-images in its config.json (a resume uses it; older run folders lack it: the default). */
    static final String EVAL_IMAGES_KEY = "eval_images";

    static final ConfigFile.Schema SCHEMA = new ConfigFile.Schema()
            .derived("model.in_channels").derived("model.img_size")
            .option("model.patch_size", "--patch").option("model.channels", "--width").option("model.num_blocks", "--blocks")
            .option("model.layers_per_block", "--layers")
            .mapped("model.num_classes", "--unconditional", v -> Boolean.toString(v.asInt() == 0))
            .option("model.head_dim", "--head-dim").option("model.norm_control", "--norm-control", s -> NormControl.parse(s).name())
            .option("model.clip", "--clip")
            .trainConfig()
            .option("data", "--data")
            .option(TrainForwardCommand.EVAL_IMAGES_KEY, "--eval-images");

    @Override public ConfigFile.Schema configSchema() { return SCHEMA; }

    @Mixin Common common;
    @Mixin OptimizerOptions optim = new OptimizerOptions(2e-3);
    @picocli.CommandLine.Spec picocli.CommandLine.Model.CommandSpec spec;
    @Option(names = "--config", paramLabel = "FILE", description = {"Settings from a JSON file in the format of a run's config.json (see below); "
            + "flags override it.", "E.g. --config runs/fmnist-p4/config.json --name fmnist-seed2 --seed 2"}) Path config;
    @Option(names = "--data", description = "Directory with MNIST-format IDX files.") Path data = ImageDataset.FASHION_MNIST_DIR;
    @Option(names = "--name", description = "Run name; the run folder is runs/<name>.") String name = "forward";
    @Option(names = "--runs", description = "Parent folder of run folders.") Path runs = Path.of("runs");
    @Option(names = "--resume", paramLabel = "DIR", description = {"Continue the run in this folder with its saved settings (DIR/config.json, "
            + "model from the checkpoint).", "Only --steps (extends the run), --checkpoint-every, --time-limit, --eval-images, --threads, --device may be given."}) Path resume;
    @Range(min = 1) @Option(names = "--patch", description = "Patch size p.") int patch = 4;
    @Range(min = 1) @Option(names = "--width", description = "Transformer width D.") int width = 128;
    @Range(min = 1) @Option(names = "--blocks", description = "Flow blocks.") int blocks = 4;
    @Range(min = 1) @Option(names = "--layers", description = "Attention layers per block.") int layers = 2;
    @Range(min = 1) @Option(names = "--head-dim", description = "Attention head width.") int headDim = 32;
    @Option(names = "--unconditional", negatable = true, arity = "0..1", fallbackValue = "true",
            description = "Ignore labels (default: ${DEFAULT-VALUE}).") boolean unconditional;
    @Option(names = "--norm-control", description = "none | hard | soft clipping of the affine params (iTARFlow).") String normControl = "soft";
    @Range(min = 0, minOpen = true) @Option(names = "--clip", description = "Norm-control bound c.") float clip = 4f;
    @Range(min = 0) @Option(names = "--sigma", description = "Training noise std (images in [-1, 1]); 0 trains on uniformly dequantised pixels instead "
            + "(the classic flow setting: its test bits/dim compares with published flows).") float sigma = 0.1f;
    @Range(min = 0, max = 1) @Option(names = "--label-dropout", description = "Probability of dropping a label (for guidance).") float labelDropout = 0.1f;
    @Option(names = "--seed", description = "Random seed (weights, data order, noise).") long seed = 0;
    @Range(min = 0) @Option(names = "--checkpoint-every", description = "Checkpoint interval in steps.") long checkpointEvery = 200;
    @Range(min = 0) @Option(names = "--time-limit", description = "Stop cleanly (with a checkpoint) after this many minutes (0 = none).") double timeLimit = 0;
    @Range(min = 1) @Option(names = "--eval-images", description = "Test images for the final bits/dim.") int evalImages = 2000;

    @Override
    public Integer call() throws Exception {
        common.apply();
        ConfigFile file = ConfigFile.forRun(spec, resume != null, RUN_TIME, "train-forward");
        Path dir = resume != null ? resume : runs.resolve(name);
        ImageDataset train = ImageDataset.loadIdx(data, "train");
        if (file != null) {
            String src = "the data in " + data;
            file.expect("model.in_channels", train.channels, src);
            file.expect("model.img_size", train.height, src);
            if (file.has("model.num_classes") && file.value("model.num_classes").asInt() != 0) file.expect("model.num_classes", train.numClasses, src);
        }
        TarFlowConfig cfg;
        if (resume != null) {
            // the checkpoint's parts are checked (and a commit a kill interrupted is finished) before anything is read
            dev.biflow.flow.train.RunCheckpoint.open(resume, optim.ema > 0
                    ? List.of(ForwardTrainer.MODEL_FILE, ForwardTrainer.STATE_FILE, ForwardTrainer.EMA_FILE)
                    : List.of(ForwardTrainer.MODEL_FILE, ForwardTrainer.STATE_FILE));
            cfg = Checkpoints.loadTarFlow(resume.resolve(ForwardTrainer.MODEL_FILE)).config;
        } else {
            if (Files.exists(dir.resolve(ForwardTrainer.MODEL_FILE)))
                throw new IllegalArgumentException("run folder " + dir + " already holds a model; pass --resume " + dir
                        + " to continue it or --name to start another run");
            int hd = Math.min(headDim, width);
            cfg = new TarFlowConfig(train.channels, train.height, patch, width, blocks, layers,
                    unconditional ? 0 : train.numClasses, hd, NormControl.parse(normControl), clip);
        }
        TrainConfig tc = optim.trainConfig(sigma, labelDropout, seed, checkpointEvery);
        ImageDataset test = ImageDataset.loadIdx(data, "test"); // every input is checked before the first step
        if (test.n < 1) throw new IllegalArgumentException("the test split in " + data + " has no images; --eval-images needs at least one");
        TarFlow model = new TarFlow(cfg, new Rng(seed));
        ForwardTrainer trainer = new ForwardTrainer(model, train, tc, dir);
        if (resume != null) {
            trainer.resume(resume);
            // the run's settings change only once the resume succeeded
            file.recordRunTimeChanges(tc, "train-forward", java.util.Map.of(EVAL_IMAGES_KEY, evalImages));
        } else {
            createDirectories(dir);
            writeConfig(dir, cfg, tc);
            if (config != null) System.out.println("train-forward: settings from " + config + " (flags override it)");
        }
        if (TrainerHooks.current() != null) TrainerHooks.current().forward(trainer, dir);
        System.out.printf(Locale.ROOT, "train-forward: %s, %,d parameters, %d tokens x %d, data %s (%d images), run folder %s%n",
                cfg.toJson(), model.parameterCount(), cfg.tokens(), cfg.tokenDim(), train.name, train.n, dir);
        long deadline = timeLimit > 0 ? System.nanoTime() + (long) (timeLimit * 60e9) : Long.MAX_VALUE;
        Path metrics = dir.resolve("metrics.jsonl");
        long t0 = System.nanoTime();
        final long[] skipped = {0};
        final double[] lastLoss = {Double.NaN};
        try (BufferedWriter mw = Files.newBufferedWriter(metrics, StandardOpenOption.CREATE, StandardOpenOption.APPEND);
             ProgressBar pb = Common.bar("train", optim.steps, "step")) {
            pb.stepTo(trainer.step());
            ForwardTrainer.Listener l = new ForwardTrainer.Listener() {
                double ema = Double.NaN;

                @Override
                public void onStep(ForwardTrainer.StepStats s) {
                    if (s.skipped()) skipped[0]++;
                    else ema = Double.isNaN(ema) ? s.loss() : 0.98 * ema + 0.02 * s.loss();
                    lastLoss[0] = ema;
                    pb.stepTo(s.step());
                    pb.setExtraMessage(String.format(Locale.ROOT, " loss %.4f lr %.2e", ema, s.lr()));
                    try {
                        mw.write(String.format(Locale.ROOT, "{\"step\":%d,\"loss\":%s,\"lr\":%.6g,\"grad_norm\":%s,\"skipped\":%b,\"sec\":%.4f}%n",
                                s.step(), num(s.loss()), s.lr(), num(s.gradNorm()), s.skipped(), s.seconds()));
                        if (s.step() % 50 == 0) mw.flush();
                    } catch (java.io.IOException e) {
                        throw new java.io.UncheckedIOException(e);
                    }
                }
            };
            // a time limit stops cleanly between steps, with a checkpoint
            trainer.run(l, () -> System.nanoTime() >= deadline);
        }
        skipped[0] = trainer.skipped();
        double secs = (System.nanoTime() - t0) / 1e9;
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
        Path report = RunReport.write(dir, "train-forward " + dir.getFileName(), EvalCommand.commandLine(spec),
                Common.ordered("steps", Long.toString(trainer.step()), "wall time", Common.duration(secs),
                        "final loss (smoothed)", String.format(Locale.ROOT, "%.4f", lastLoss[0]),
                        "test bits/dim", String.format(Locale.ROOT, "%.4f (%d images)", bpd, Math.min(evalImages, test.n)),
                        "skipped steps", Long.toString(skipped[0]), "samples", "samples.png: exact inverse, guidance 1, denoised"));
        System.out.printf(Locale.ROOT, "train-forward: done %d steps in %s (%d skipped), loss %.4f, test bits/dim %.4f (%d images); model %s; report %s%n",
                trainer.step(), Common.duration(secs), skipped[0], lastLoss[0], bpd, Math.min(evalImages, test.n), dir.resolve(ForwardTrainer.MODEL_FILE), report);
        return 0;
    }

    private static String num(double v) { return Double.isFinite(v) ? String.format(Locale.ROOT, "%.6g", v) : "null"; }

    private void writeConfig(Path dir, TarFlowConfig cfg, TrainConfig tc) throws java.io.IOException {
        ObjectMapper om = ConfigFile.json();
        ObjectNode o = om.createObjectNode();
        o.set("model", om.readTree(cfg.toJson()));
        o.set("train", om.valueToTree(tc));
        o.put("data", data.toString());
        o.put(EVAL_IMAGES_KEY, evalImages);
        ConfigFile.write(dir.resolve(ConfigFile.FILE_NAME), o);
    }

    static void createDirectories(Path dir) throws java.io.IOException {
        try {
            Files.createDirectories(dir);
        } catch (java.io.IOException e) {
            throw new java.io.IOException("cannot create the run folder " + dir + ": " + ConfigFile.reason(e), e);
        }
    }
}
