// biflow train-backward: stage 2, the learned 1-NFE inverse G of a frozen forward flow F (BiFlow).
package dev.biflow.cli;

import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.io.ImageGrid;
import dev.biflow.flow.backward.BackwardConfig;
import dev.biflow.flow.backward.BackwardTrainer;
import dev.biflow.flow.backward.BiFlowModel;
import dev.biflow.flow.backward.BiFlowSampler;
import dev.biflow.flow.backward.FrozenFlow;
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
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;

@Command(name = "train-backward", mixinStandardHelpOptions = true, showDefaultValues = true, sortOptions = false,
        description = {"Train BiFlow's backward model G: a bidirectional ViT that inverts a frozen forward flow F in one pass,",
                "with hidden alignment, learned denoising, norm control and training-time CFG (paper defaults)."},
        footer = {"", "Examples:",
                "  biflow train-backward --forward runs/forward/model-ema.safetensors --name biflow --minutes 20",
                "  biflow train-backward --forward f.safetensors --strategy naive --name ablation-naive   # paper ablation"})
final class TrainBackwardCommand implements Callable<Integer> {
    @Mixin Common common;
    @Option(names = "--forward", required = true, description = "The frozen forward model F (.safetensors).") Path forward;
    @Option(names = "--data", description = "Directory with MNIST-format IDX files.") Path data = ImageDataset.FASHION_MNIST_DIR;
    @Option(names = "--name", description = "Run name; the run folder is runs/<name>.") String name = "backward";
    @Option(names = "--runs", description = "Parent folder of run folders.") Path runs = Path.of("runs");
    @Option(names = "--resume", description = "Continue the run in this folder.") Path resume;
    @Option(names = "--strategy", description = "hidden-alignment | naive | hidden-distillation") String strategy = "hidden-alignment";
    @Option(names = "--denoise", description = "learned | score | none") String denoise = "learned";
    @Option(names = "--align-norm", description = "token | sample | none (norm control of the alignment targets)") String alignNorm = "token";
    @Option(names = "--cfg", description = "training-time | two-pass | none") String cfg = "training-time";
    @Option(names = "--w-max", description = "Largest guidance scale sampled in training.") float wMax = 3f;
    @Option(names = "--width", description = "G's width.") int width = 128;
    @Option(names = "--head-dim", description = "G's attention head width.") int headDim = 32;
    @Option(names = "--layers-per-stage", description = "Transformer layers per stage (one stage per F block).") int layersPerStage = 2;
    @Option(names = "--denoise-layers", description = "Layers of the final denoising block.") int denoiseLayers = 1;
    @Option(names = "--sigma", description = "F's training noise (must match how F was trained).") float sigma = 0.1f;
    @Option(names = "--steps", description = "Optimizer steps.") long steps = 2000;
    @Option(names = "--batch", description = "Batch size.") int batch = 64;
    @Option(names = "--lr", description = "Peak learning rate.") double lr = 1e-3;
    @Option(names = "--grad-clip", description = "Global gradient-norm clip (0 = off).") double gradClip = 1.0;
    @Option(names = "--seed", description = "Random seed.") long seed = 0;
    @Option(names = "--checkpoint-every", description = "Checkpoint interval in steps.") long checkpointEvery = 100;
    @Option(names = "--time-limit", description = "Stop cleanly (with a checkpoint) after this many minutes (0 = none).") double timeLimit = 0;

    @Override
    public Integer call() throws Exception {
        common.apply();
        TarFlow f = Checkpoints.loadTarFlow(forward);
        FrozenFlow ff = FrozenFlow.of(f);
        Path dir = resume != null ? resume : runs.resolve(name);
        if (resume == null && Files.exists(dir.resolve(BackwardTrainer.MODEL_FILE)))
            throw new IllegalArgumentException("run folder " + dir + " already holds a backward model; pass --resume " + dir + " or another --name");
        BackwardConfig bc = BackwardConfig.forFlow(f.config)
                .withStrategy(BackwardConfig.Strategy.parse(strategy)).withDenoise(BackwardConfig.Denoise.parse(denoise))
                .withAlignNorm(BackwardConfig.AlignNorm.parse(alignNorm)).withCfg(BackwardConfig.Cfg.parse(cfg), wMax, 0.1f)
                .withSize(width, headDim, layersPerStage, denoiseLayers);
        if (resume != null) bc = dev.biflow.flow.backward.BackwardCheckpoints.load(resume.resolve(BackwardTrainer.MODEL_FILE)).config;
        BiFlowModel g = new BiFlowModel(bc, new Rng(seed));
        ImageDataset train = ImageDataset.loadIdx(data, "train");
        TrainConfig tc = TrainConfig.defaults(steps).withBatch(batch).withLr(lr).withWarmup(Math.max(1, steps / 20))
                .withGradClip(gradClip).withSigma(sigma).withSeed(seed).withCheckpointEvery(checkpointEvery);
        Files.createDirectories(dir);
        Files.writeString(dir.resolve("config.json"), "{\"backward\": " + bc.toJson() + ",\n \"forward\": \"" + forward + "\",\n \"train\": "
                + new com.fasterxml.jackson.databind.ObjectMapper().writeValueAsString(tc) + "}\n");
        BackwardTrainer t = new BackwardTrainer(ff, g, train, tc, List.of(), dir);
        if (resume != null) t.resume(resume);
        System.out.printf(Locale.ROOT, "train-backward: G %,d parameters, %s; F %s; run folder %s%n", g.parameterCount(), bc.toJson(), forward, dir);
        long deadline = timeLimit > 0 ? System.nanoTime() + (long) (timeLimit * 60e9) : Long.MAX_VALUE;
        long t0 = System.nanoTime();
        double[] last = {Double.NaN, Double.NaN};
        try (BufferedWriter mw = Files.newBufferedWriter(dir.resolve("metrics.jsonl"), StandardOpenOption.CREATE, StandardOpenOption.APPEND);
             ProgressBar pb = Common.bar("train G", steps, "step")) {
            pb.stepTo(t.step());
            BackwardTrainer.Listener l = new BackwardTrainer.Listener() {
                @Override
                public void onStep(BackwardTrainer.StepStats s) {
                    pb.stepTo(s.step());
                    last[0] = s.recon();
                    last[1] = s.align();
                    pb.setExtraMessage(String.format(Locale.ROOT, "recon %.4f align %.4f", s.recon(), s.align()));
                    try {
                        mw.write(String.format(Locale.ROOT, "{\"step\":%d,\"loss\":%.6g,\"recon\":%.6g,\"align\":%.6g,\"lr\":%.6g,\"skipped\":%b}%n",
                                s.step(), s.loss(), s.recon(), s.align(), s.lr(), s.skipped()));
                    } catch (java.io.IOException e) {
                        throw new java.io.UncheckedIOException(e);
                    }
                }
            };
            while (t.step() < steps && System.nanoTime() < deadline) t.runUntil(Math.min(steps, t.step() + Math.max(1, checkpointEvery)), l);
        }
        double secs = (System.nanoTime() - t0) / 1e9;
        Path grid = SampleCommand.compareGrid(ff, g, sigma, f.config, dir.resolve("samples-biflow-vs-exact.png"), 10, 1f, seed + 3);
        Path report = RunReport.write(dir, "train-backward " + dir.getFileName(), "biflow train-backward (see config.json)",
                Map.of("steps", Long.toString(t.step()), "wall time", Common.duration(secs),
                        "last reconstruction MSE", String.format(Locale.ROOT, "%.5f", last[0]),
                        "samples", grid.getFileName() + ": rows alternate BiFlow 1-NFE / exact inverse (score-denoised) from the same z and labels"));
        System.out.printf(Locale.ROOT, "train-backward: done %d steps in %s, recon %.5f; model %s; report %s%n",
                t.step(), Common.duration(secs), last[0], dir.resolve(BackwardTrainer.MODEL_FILE), report);
        return 0;
    }
}
