// biflow train-backward: stage 2, the learned 1-NFE inverse G of a frozen forward flow F (BiFlow).
package dev.biflow.cli;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.io.ImageGrid;
import dev.biflow.flow.inverse.BackwardConfig;
import dev.biflow.flow.inverse.BackwardTrainer;
import dev.biflow.flow.inverse.BiFlowModel;
import dev.biflow.flow.inverse.BiFlowSampler;
import dev.biflow.flow.inverse.FrozenFlow;
import dev.biflow.flow.data.ImageDataset;
import dev.biflow.flow.model.Checkpoints;
import dev.biflow.flow.model.TarFlow;
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
import java.util.Map;
import java.util.Set;
import java.util.concurrent.Callable;

@Command(name = "train-backward", mixinStandardHelpOptions = true, showDefaultValues = true, sortOptions = false,
        description = {"Train BiFlow's backward model G: a bidirectional ViT that inverts a frozen forward flow F in one pass, "
                + "with hidden alignment, learned denoising, norm control and training-time CFG (paper defaults).",
                "Settings: flags > --config FILE > the defaults below; the run folder gets them all as config.json."},
        footer = {"", "Examples:",
                "  biflow train-backward --forward runs/forward/model-ema.safetensors \\",
                "      --name biflow --time-limit 20",
                "  # paper ablation:",
                "  biflow train-backward --forward f.safetensors --strategy naive --name naive",
                "  # continue a killed run with its saved settings (F's path included):",
                "  biflow train-backward --resume runs/biflow",
                "  # repeat it with another seed:",
                "  biflow train-backward --config runs/biflow/config.json \\",
                "      --name biflow-s2 --seed 2",
                "",
                "Config file: the format of runs/<name>/config.json; every key is optional,",
                "an unknown key is an error. backward.{tokens, token_dim, stages, num_classes,",
                "image_channels, image_size, patch_size} follow F: if present they must match it.",
                "  {\"backward\": {\"width\": 128, \"head_dim\": 32, \"layers_per_stage\": 2,",
                "                \"strategy\": \"hidden-alignment\", \"w_max\": 3.0, ...},",
                "   \"forward\": \"runs/fmnist-p4/model-ema.safetensors\",",
                "   \"train\": {\"steps\": 2000, \"batchSize\": 64, \"lr\": 0.001, \"seed\": 0, ...},",
                "   \"data\": \"/usr/share/datasets/fashion-mnist\"}"})
final class TrainBackwardCommand implements Callable<Integer>, ConfigFile.Configurable {
    /** Options a resumed run may change: they do not alter what the run computes, or (--steps) extend it. */
    static final Set<String> RUN_TIME = new LinkedHashSet<>(List.of("--steps", "--checkpoint-every", "--time-limit", "--threads", "--device"));

    /** G's geometry keys: copied from F, so a file may hold them only with F's values. */
    private static final String[] GEOMETRY = {"tokens", "token_dim", "stages", "num_classes", "image_channels", "image_size", "patch_size"};

    static final ConfigFile.Schema SCHEMA = schema();

    private static ConfigFile.Schema schema() {
        ConfigFile.Schema s = new ConfigFile.Schema();
        for (String k : GEOMETRY) s.derived("backward." + k);
        return s.option("backward.width", "--width").option("backward.head_dim", "--head-dim")
                .option("backward.layers_per_stage", "--layers-per-stage").option("backward.denoise_layers", "--denoise-layers")
                .option("backward.head", "--head", v -> BackwardConfig.Head.parse(v).name())
                .option("backward.strategy", "--strategy", v -> BackwardConfig.Strategy.parse(v).name())
                .option("backward.denoise", "--denoise", v -> BackwardConfig.Denoise.parse(v).name())
                .option("backward.align_norm", "--align-norm", v -> BackwardConfig.AlignNorm.parse(v).name())
                .option("backward.cfg", "--cfg", v -> BackwardConfig.Cfg.parse(v).name())
                .option("backward.w_max", "--w-max").option("backward.w_zero_prob", "--w-zero-prob")
                .option("backward.recon_weight", "--recon-weight").option("backward.align_weight", "--align-weight")
                .option("backward.adaptive_eps", "--adaptive-eps").option("backward.adaptive_p", "--adaptive-p")
                .option("forward", "--forward")
                .trainConfig()
                .option("data", "--data")
                .option("perceptual.distance", "--perceptual").option("perceptual.features", "--features")
                .option("perceptual.weight", "--perceptual-weight");
    }

    @Override public ConfigFile.Schema configSchema() { return SCHEMA; }

    @Mixin Common common;
    @Mixin OptimizerOptions optim = new OptimizerOptions(1e-3);
    @picocli.CommandLine.Spec picocli.CommandLine.Model.CommandSpec spec;
    @Option(names = "--config", paramLabel = "FILE", description = {"Settings from a JSON file in the format of a run's config.json (see below); "
            + "flags override it.", "E.g. --config runs/biflow/config.json --name biflow-s2 --seed 2"}) Path config;
    @Option(names = "--forward", description = "The frozen forward model F (.safetensors); required unless --resume or --config gives it.") Path forward;
    @Option(names = "--data", description = "Directory with MNIST-format IDX files.") Path data = ImageDataset.FASHION_MNIST_DIR;
    @Option(names = "--name", description = "Run name; the run folder is runs/<name>.") String name = "backward";
    @Option(names = "--runs", description = "Parent folder of run folders.") Path runs = Path.of("runs");
    @Option(names = "--resume", paramLabel = "DIR", description = {"Continue the run in this folder with its saved settings (DIR/config.json, "
            + "model from the checkpoint).", "Only --steps (extends the run), --checkpoint-every, --time-limit, --threads, --device may be given."}) Path resume;
    @Option(names = "--strategy", description = "hidden-alignment | naive | hidden-distillation") String strategy = "hidden-alignment";
    @Option(names = "--denoise", description = "learned | score | none") String denoise = "learned";
    @Option(names = "--align-norm", description = "token | sample | none (norm control of the alignment targets)") String alignNorm = "token";
    @Option(names = "--cfg", description = "training-time | training-time-stage | two-pass | none: CFG trained in (whole-network or the paper's stage-wise combination; both sample in one pass), two passes at sampling, or none (default: training-time for a class-conditional F, else none)") String cfg;
    @Range(min = 0) @Option(names = "--w-max", description = "Largest guidance scale sampled in training.") float wMax = 3f;
    @Range(min = 0, max = 1) @Option(names = "--w-zero-prob", description = "Probability of guidance scale 0 in training-time CFG.") float wZeroProb = 0.1f;
    @Range(min = 1) @Option(names = "--width", description = "G's width.") int width = 128;
    @Range(min = 1) @Option(names = "--head-dim", description = "G's attention head width.") int headDim = 32;
    @Range(min = 1) @Option(names = "--layers-per-stage", description = "Transformer layers per stage (one stage per F block).") int layersPerStage = 2;
    @Range(min = 0) @Option(names = "--denoise-layers", description = "Layers of the final denoising block.") int denoiseLayers = 1;
    @Option(names = "--head", description = "linear | mlp projection heads of hidden alignment.") String head = "linear";
    @Range(min = 0) @Option(names = "--recon-weight", description = "Weight of the reconstruction term D(x, x').") float reconWeight = 1f;
    @Range(min = 0) @Option(names = "--align-weight", description = "Weight of each hidden alignment / distillation term.") float alignWeight = 1f;
    @Range(min = 0) @Option(names = "--adaptive-eps", description = "eps of the adaptive re-weighting L / sg((L + eps)^p).") float adaptiveEps = 0.01f;
    @Range(min = 0) @Option(names = "--adaptive-p", description = "p of the adaptive re-weighting (0 = off).") float adaptiveP = 1f;
    @Range(min = 0) @Option(names = "--sigma", description = "F's training noise (must match how F was trained).") float sigma = 0.1f;
    @Range(min = 0, max = 1) @Option(names = "--label-dropout", description = "Probability of dropping a label (trains the null class for guidance).") float labelDropout = 0.1f;
    @Option(names = "--seed", description = "Random seed.") long seed = 0;
    @Option(names = "--perceptual", description = {"Perceptual terms at the image end, added to MSE: none | lpips (the LPIPS-style",
            "convnet distance) | lpips+convnext (also the ConvNeXt pooled-feature distance, the paper's setting)."})
    String perceptual = "lpips+convnext";
    @Option(names = "--features", description = "Folder with the feature networks (biflow train-features writes them; the shipped ones are in models/fmnist).")
    Path features = DemoCommand.SHIPPED;
    @Range(min = 0) @Option(names = "--perceptual-weight", description = "Weight of each perceptual term (after adaptive re-weighting).") float perceptualWeight = 1f;
    @Range(min = 0) @Option(names = "--checkpoint-every", description = "Checkpoint interval in steps.") long checkpointEvery = 100;
    @Range(min = 0) @Option(names = "--time-limit", description = "Stop cleanly (with a checkpoint) after this many minutes (0 = none).") double timeLimit = 0;

    /** The perceptual terms --perceptual asks for, loaded from --features (checked before any training). */
    private List<BackwardTrainer.Term> perceptualTerms() throws java.io.IOException {
        return perceptualTerms(perceptual, features, perceptualWeight);
    }

    static List<BackwardTrainer.Term> perceptualTerms(String perceptual, Path features, float perceptualWeight) throws java.io.IOException {
        String p = perceptual.toLowerCase(Locale.ROOT);
        if (p.equals("none")) return List.of();
        if (!p.equals("lpips") && !p.equals("lpips+convnext"))
            throw new IllegalArgumentException("--perceptual: expected none, lpips or lpips+convnext, got '" + perceptual + "'");
        List<String> need = p.equals("lpips") ? List.of(dev.biflow.flow.features.FeatureNets.LPIPS_FILE)
                : List.of(dev.biflow.flow.features.FeatureNets.LPIPS_FILE, dev.biflow.flow.features.FeatureNets.CONVNEXT_FILE);
        for (String f : need)
            if (!Files.exists(features.resolve(f)))
                throw new IllegalArgumentException("--perceptual " + p + " needs " + features.resolve(f) + ": train the feature networks with "
                        + "`biflow train-features --out " + features + "`, pass --features DIR, or use --perceptual none");
        if (!(perceptualWeight >= 0) || Float.isInfinite(perceptualWeight))
            throw new IllegalArgumentException("--perceptual-weight must be finite and >= 0, got " + perceptualWeight);
        List<BackwardTrainer.Term> terms = new java.util.ArrayList<>();
        terms.add(new BackwardTrainer.Term(dev.biflow.flow.features.LpipsDistance.load(features.resolve(need.get(0))), perceptualWeight));
        if (need.size() > 1)
            terms.add(new BackwardTrainer.Term(dev.biflow.flow.features.PooledFeatureDistance.load(features.resolve(need.get(1))), perceptualWeight));
        return terms;
    }

    @Override
    public Integer call() throws Exception {
        common.apply();
        ConfigFile file = ConfigFile.forRun(spec, resume != null, RUN_TIME, "train-backward");
        if (forward == null)
            throw new IllegalArgumentException("--forward is required: the frozen forward model F, e.g. --forward runs/fmnist-p4/model-ema.safetensors");
        TarFlow f = Checkpoints.loadTarFlow(forward);
        FrozenFlow ff = FrozenFlow.of(f);
        Path dir = resume != null ? resume : runs.resolve(name);
        if (resume == null && Files.exists(dir.resolve(BackwardTrainer.MODEL_FILE)))
            throw new IllegalArgumentException("run folder " + dir + " already holds a backward model; pass --resume " + dir + " or another --name");
        BackwardConfig base = BackwardConfig.forFlow(f.config);
        if (file != null) {
            ObjectNode geometry = (ObjectNode) ConfigFile.json().readTree(base.toJson());
            for (String k : GEOMETRY) file.expect("backward." + k, geometry.get(k).asLong(), "the forward model " + forward);
        }
        List<BackwardTrainer.Term> terms = perceptualTerms();
        BackwardConfig bc = base
                .withStrategy(BackwardConfig.Strategy.parse(strategy)).withDenoise(BackwardConfig.Denoise.parse(denoise))
                .withAlignNorm(BackwardConfig.AlignNorm.parse(alignNorm))
                .withCfg(cfg == null ? base.cfg() : BackwardConfig.Cfg.parse(cfg), wMax, wZeroProb)
                .withSize(width, headDim, layersPerStage, denoiseLayers).withHead(BackwardConfig.Head.parse(head))
                .withWeights(reconWeight, alignWeight).withAdaptive(adaptiveEps, adaptiveP);
        if (resume != null) {
            // the checkpoint's parts are checked (and a commit a kill interrupted is finished) before anything is read
            dev.biflow.flow.train.RunCheckpoint.open(resume, optim.ema > 0
                    ? List.of(BackwardTrainer.MODEL_FILE, BackwardTrainer.STATE_FILE, BackwardTrainer.EMA_FILE)
                    : List.of(BackwardTrainer.MODEL_FILE, BackwardTrainer.STATE_FILE));
            bc = dev.biflow.flow.inverse.BackwardCheckpoints.load(resume.resolve(BackwardTrainer.MODEL_FILE)).config;
        }
        BiFlowModel g = new BiFlowModel(bc, new Rng(seed));
        ImageDataset train = ImageDataset.loadIdx(data, "train");
        TrainConfig tc = optim.trainConfig(sigma, labelDropout, seed, checkpointEvery);
        BackwardTrainer t = new BackwardTrainer(ff, g, train, tc, terms, dir);
        if (resume != null) {
            t.resume(resume);
            // the run's settings change only once the resume succeeded
            file.recordRunTimeChanges(tc, "train-backward", Map.of());
        } else {
            TrainForwardCommand.createDirectories(dir);
            ObjectMapper om = ConfigFile.json();
            ObjectNode o = om.createObjectNode();
            o.set("backward", om.readTree(bc.toJson()));
            o.put("forward", forward.toString());
            o.set("train", om.valueToTree(tc));
            o.put("data", data.toString());
            ObjectNode pn = o.putObject("perceptual");
            pn.put("distance", perceptual);
            pn.put("features", features.toString());
            pn.put("weight", perceptualWeight);
            ConfigFile.write(dir.resolve(ConfigFile.FILE_NAME), o);
            if (config != null) System.out.println("train-backward: settings from " + config + " (flags override it)");
        }
        if (TrainerHooks.current() != null)
            TrainerHooks.current().backward(t, dir, forward, new TrainerHooks.Perceptual(perceptual, features, perceptualWeight));
        System.out.printf(Locale.ROOT, "train-backward: G %,d parameters, %s; F %s; run folder %s%n", g.parameterCount(), bc.toJson(), forward, dir);
        long deadline = timeLimit > 0 ? System.nanoTime() + (long) (timeLimit * 60e9) : Long.MAX_VALUE;
        long t0 = System.nanoTime();
        double[] last = {Double.NaN, Double.NaN};
        try (BufferedWriter mw = Files.newBufferedWriter(dir.resolve("metrics.jsonl"), StandardOpenOption.CREATE, StandardOpenOption.APPEND);
             ProgressBar pb = Common.bar("train G", optim.steps, "step")) {
            pb.stepTo(t.step());
            BackwardTrainer.Listener l = new BackwardTrainer.Listener() {
                @Override
                public void onStep(BackwardTrainer.StepStats s) {
                    pb.stepTo(s.step());
                    last[0] = s.recon();
                    last[1] = s.align();
                    pb.setExtraMessage(String.format(Locale.ROOT, " recon %.4f align %.4f", s.recon(), s.align()));
                    try {
                        mw.write(String.format(Locale.ROOT, "{\"step\":%d,\"loss\":%.6g,\"recon\":%.6g,\"align\":%.6g,\"lr\":%.6g,\"skipped\":%b}%n",
                                s.step(), s.loss(), s.recon(), s.align(), s.lr(), s.skipped()));
                    } catch (java.io.IOException e) {
                        throw new java.io.UncheckedIOException(e);
                    }
                }
            };
            t.run(l, () -> System.nanoTime() >= deadline); // a time limit stops cleanly between steps, with a checkpoint
        }
        double secs = (System.nanoTime() - t0) / 1e9;
        // guided at w = 1 where G can be (a G trained without CFG samples at w = 0 only, one with w in the input up to w_max)
        float gridW = bc.cfg() == BackwardConfig.Cfg.NONE ? 0f : bc.cfg().guidanceInput() ? Math.min(1f, bc.wMax()) : 1f;
        Path grid = SampleCommand.compareGrid(ff, g, sigma, f.config, dir.resolve("samples-biflow-vs-exact.png"), 10, gridW, seed + 3);
        Path report = RunReport.write(dir, "train-backward " + dir.getFileName(), "biflow train-backward (see config.json)",
                Common.ordered("steps", Long.toString(t.step()), "wall time", Common.duration(secs),
                        "last reconstruction MSE", String.format(Locale.ROOT, "%.5f", last[0]),
                        "samples", grid.getFileName() + ": rows alternate BiFlow 1-NFE / exact inverse (score-denoised) from the same z and labels, "
                                + "guidance w = " + gridW));
        System.out.printf(Locale.ROOT, "train-backward: done %d steps in %s, recon %.5f; model %s; report %s%n",
                t.step(), Common.duration(secs), last[0], dir.resolve(BackwardTrainer.MODEL_FILE), report);
        return 0;
    }
}
