// Training G against a frozen F: F untouched, reconstruction learned, alignment vs naive, every variant trains, exact resume, divergence.
package dev.biflow.flow.inverse;

import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.kernels.Parallel;
import dev.biflow.flow.data.ImageDataset;
import dev.biflow.flow.features.MseDistance;
import dev.biflow.flow.model.TarFlow;
import dev.biflow.flow.train.TrainConfig;
import dev.biflow.flow.train.TrainingDivergedException;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

import static dev.biflow.flow.inverse.BackwardConfigTest.assertMsg;
import static org.junit.jupiter.api.Assertions.*;

class BackwardTrainerTest {
    static final BackwardTrainer.Listener QUIET = new BackwardTrainer.Listener() {};

    static Map<String, float[]> snapshot(TarFlow f) {
        Map<String, float[]> s = new LinkedHashMap<>();
        for (var e : f.stateDict().entrySet()) s.put(e.getKey(), e.getValue().data().clone());
        return s;
    }

    static void assertUnchanged(Map<String, float[]> before, TarFlow f) {
        for (var e : f.stateDict().entrySet()) {
            assertArrayEquals(before.get(e.getKey()), e.getValue().data(), "forward parameter " + e.getKey() + " changed");
            assertNull(e.getValue().gradData(), "a gradient reached forward parameter " + e.getKey());
        }
    }

    /** Records the labels F is run with. */
    static final class Recording implements FrozenFlow {
        final FrozenFlow inner;
        final List<int[]> labels = new ArrayList<>();
        Recording(FrozenFlow inner) { this.inner = inner; }
        public int tokens() { return inner.tokens(); }
        public int tokenDim() { return inner.tokenDim(); }
        public int blocks() { return inner.blocks(); }
        public int numClasses() { return inner.numClasses(); }
        public int[] exampleShape() { return inner.exampleShape(); }
        public int[] imageGeometry() { return inner.imageGeometry(); }
        public Tensor toTokens(Tensor x) { return inner.toTokens(x); }
        public Tensor fromTokens(Tensor t) { return inner.fromTokens(t); }
        public List<Tensor> trajectory(Tensor x, int[] y) { labels.add(y == null ? null : y.clone()); return inner.trajectory(x, y); }
        public Tensor priorVar() { return inner.priorVar(); }
        public Tensor exactInverse(Tensor eps, int[] y, float w) { return inner.exactInverse(eps, y, w); }
        public Tensor scoreDenoise(Tensor x, int[] y, float sigma) { return inner.scoreDenoise(x, y, sigma); }
        public dev.biflow.engine.nn.Module module() { return inner.module(); }
        public String describe() { return inner.describe(); }
    }

    /**
     * The acceptance test of the method on a tiny image set: G trained for 200 steps on 96 8x8
     * images under a briefly trained TarFlow reconstructs held-out images from F's noise, with
     * hidden alignment and with naive distillation (same steps, seed and data), and F stays
     * bit-identical. Which of the two wins is printed, not asserted: with one seed and this few
     * steps the two are within seed noise of each other ({@link AblationTest} compares them over
     * three seeds). CFG is off here only to halve the cost of the test.
     */
    @Test
    void shortTrainingInvertsTheFlowWithAlignmentAndNaive() throws IOException {
        TarFlow f = Fixtures.trainedFlow();
        Map<String, float[]> before = snapshot(f);
        FrozenFlow ff = FrozenFlow.of(f);
        ImageDataset data = Fixtures.images(96, 5), held = Fixtures.images(48, 77);
        Tensor xh = Fixtures.clean(held, 48);
        int[] yh = Fixtures.labels(held, 48);
        Map<BackwardConfig.Strategy, double[]> res = new LinkedHashMap<>();
        for (BackwardConfig.Strategy s : new BackwardConfig.Strategy[]{BackwardConfig.Strategy.HIDDEN_ALIGNMENT, BackwardConfig.Strategy.NAIVE}) {
            BiFlowModel g = new BiFlowModel(Fixtures.gConfig().withStrategy(s).withCfg(BackwardConfig.Cfg.NONE), new Rng(1));
            double initial = BackwardTrainer.reconstruction(ff, g, xh, yh, Fixtures.SIGMA, new Rng(9)).mseClean();
            long t0 = System.nanoTime();
            new BackwardTrainer(ff, g, data, Fixtures.train(200), List.of(), null).run(QUIET);
            System.out.printf(Locale.ROOT, "%s: 200 steps in %.1f s%n", s, (System.nanoTime() - t0) / 1e9);
            double after = BackwardTrainer.reconstruction(ff, g, xh, yh, Fixtures.SIGMA, new Rng(9)).mseClean();
            res.put(s, new double[]{initial, after});
            assertTrue(after < 0.1, s + ": held-out reconstruction MSE " + after + " should fall below 0.1");
            assertTrue(after < 0.2 * initial, s + ": held-out reconstruction MSE should fall well below its initial " + initial + ", got " + after);
        }
        System.out.printf(Locale.ROOT, "held-out reconstruction MSE after 200 steps: alignment %.4f, naive %.4f (initial %.4f)%n",
                res.get(BackwardConfig.Strategy.HIDDEN_ALIGNMENT)[1], res.get(BackwardConfig.Strategy.NAIVE)[1],
                res.get(BackwardConfig.Strategy.NAIVE)[0]);
        assertUnchanged(before, f);
    }

    /** Every strategy x denoising x CFG mode (and MLP heads, perceptual terms, no re-weighting) trains a few finite steps with F untouched. */
    @Test
    void everyVariantTrainsAndLeavesTheFlowUntouched() throws IOException {
        TarFlow f = Fixtures.trainedFlow();
        Map<String, float[]> before = snapshot(f);
        FrozenFlow ff = FrozenFlow.of(f);
        ImageDataset data = Fixtures.images(24, 5);
        List<BackwardConfig> variants = new ArrayList<>();
        BackwardConfig base = Fixtures.gConfig();
        for (BackwardConfig.Strategy s : new BackwardConfig.Strategy[]{BackwardConfig.Strategy.NAIVE,
                BackwardConfig.Strategy.HIDDEN_DISTILLATION, BackwardConfig.Strategy.HIDDEN_ALIGNMENT})
            for (BackwardConfig.Cfg c : BackwardConfig.Cfg.values())
                if (!(c == BackwardConfig.Cfg.TRAINING_TIME_STAGE && s == BackwardConfig.Strategy.HIDDEN_DISTILLATION)) // rejected by the config
                    variants.add(base.withStrategy(s).withCfg(c).withDenoise(BackwardConfig.Denoise.values()[(s.ordinal() + c.ordinal()) % 3])
                            .withAlignNorm(BackwardConfig.AlignNorm.values()[c.ordinal() % 3]));
        variants.add(base.withHead(BackwardConfig.Head.MLP).withAdaptive(0.01f, 0f).withSize(32, 8, 2, 0));
        for (BackwardConfig c : variants) {
            BiFlowModel g = new BiFlowModel(c, new Rng(2));
            List<BackwardTrainer.Term> perceptual = c.cfg() == BackwardConfig.Cfg.TWO_PASS
                    ? List.of(new BackwardTrainer.Term(MseDistance.INSTANCE, 0.5f)) : List.of();
            List<BackwardTrainer.StepStats> seen = new ArrayList<>();
            Map<String, float[]> g0 = new LinkedHashMap<>();
            for (var e : g.stateDict().entrySet()) g0.put(e.getKey(), e.getValue().data().clone());
            new BackwardTrainer(ff, g, data, Fixtures.train(3).withWarmup(0), perceptual, null).run(new BackwardTrainer.Listener() {
                @Override public void onStep(BackwardTrainer.StepStats s) { seen.add(s); }
            });
            assertEquals(3, seen.size());
            for (BackwardTrainer.StepStats s : seen) {
                assertFalse(s.skipped(), c.toJson());
                assertTrue(Double.isFinite(s.loss()) && Double.isFinite(s.recon()), c.toJson());
                if (c.strategy() == BackwardConfig.Strategy.NAIVE) assertEquals(0, s.align());
                else assertTrue(s.align() > 0, c.toJson());
            }
            boolean moved = false;
            for (var e : g.stateDict().entrySet()) moved |= !java.util.Arrays.equals(g0.get(e.getKey()), e.getValue().data());
            assertTrue(moved, "G must learn: " + c.toJson());
        }
        assertUnchanged(before, f);
    }

    @Test
    void droppedLabelsTrainTheNullClassAgainstFsUnconditionalPath() {
        TarFlow f = Fixtures.trainedFlow();
        Recording rec = new Recording(FrozenFlow.of(f));
        ImageDataset data = Fixtures.images(16, 5);
        // random weights: a fresh G's adaLN layers are zero, so no gradient would reach the class table yet
        BiFlowModel g = BiFlowModelTest.randomModel(Fixtures.gConfig().withCfg(BackwardConfig.Cfg.TWO_PASS), 3);
        BackwardTrainer t = new BackwardTrainer(rec, g, data, Fixtures.train(1).withLabelDropout(1f), List.of(), null);
        BackwardTrainer.Losses l = t.objective(Fixtures.clean(data, 8), Fixtures.labels(data, 8), new Rng(4));
        assertArrayEquals(new int[]{-1, -1, -1, -1, -1, -1, -1, -1}, rec.labels.getLast(), "F must take its unconditional path");
        l.total().backward();
        float[] grad = g.classEmbed.gradData();
        int d = g.config.width();
        for (int row = 0; row < 4; row++) {
            double s = 0;
            for (int j = 0; j < d; j++) s += Math.abs(grad[row * d + j]);
            if (row == 3) assertTrue(s > 0, "the null row must be trained");
            else assertEquals(0, s, "class row " + row + " must not be trained when every label is dropped");
        }
        // without dropout the real labels reach both F and G
        BackwardTrainer t2 = new BackwardTrainer(rec, g, data, Fixtures.train(1).withLabelDropout(0f), List.of(), null);
        t2.objective(Fixtures.clean(data, 3), new int[]{0, 1, 2}, new Rng(4));
        assertArrayEquals(new int[]{0, 1, 2}, rec.labels.getLast());
    }

    @Test
    void trainingTimeCfgDrawsGuidanceScalesAndTrainsTheNullPartner() {
        TarFlow f = Fixtures.trainedFlow();
        ImageDataset data = Fixtures.images(16, 5);
        BiFlowModel g = BiFlowModelTest.randomModel(Fixtures.gConfig().withCfg(BackwardConfig.Cfg.TRAINING_TIME, 3f, 0f), 3);
        BackwardTrainer t = new BackwardTrainer(FrozenFlow.of(f), g, data, Fixtures.train(1).withLabelDropout(0f), List.of(), null);
        g.resetEvaluations();
        BackwardTrainer.Losses l = t.objective(Fixtures.clean(data, 6), new int[]{0, 1, 2, 0, 1, 2}, new Rng(4));
        assertEquals(1, g.evaluations(), "the conditional batch and its null partners are one batched evaluation");
        l.total().backward();
        // no label is dropped, yet the null class is trained: it is the partner of every example with w > 0
        float[] grad = g.classEmbed.gradData();
        double nullRow = 0;
        for (int j = 0; j < g.config.width(); j++) nullRow += Math.abs(grad[3 * g.config.width() + j]);
        assertTrue(nullRow > 0);
        assertNotNull(g.wEmbed.fc1().weight.gradData(), "the guidance embedding must be trained");
    }

    /** The stage-wise form trains the same parameters (null class, guidance embedding) with a different objective. */
    @Test
    void stageWiseTrainingTimeCfgTrainsTheNullClassAndDiffersFromTheWholeNetworkForm() {
        TarFlow f = Fixtures.trainedFlow();
        ImageDataset data = Fixtures.images(16, 5);
        double[] loss = new double[2];
        BackwardConfig.Cfg[] modes = {BackwardConfig.Cfg.TRAINING_TIME, BackwardConfig.Cfg.TRAINING_TIME_STAGE};
        for (int m = 0; m < 2; m++) {
            BiFlowModel g = BiFlowModelTest.randomModel(Fixtures.gConfig().withCfg(modes[m], 3f, 0f), 3);
            BackwardTrainer t = new BackwardTrainer(FrozenFlow.of(f), g, data, Fixtures.train(1).withLabelDropout(0f), List.of(), null);
            BackwardTrainer.Losses l = t.objective(Fixtures.clean(data, 6), new int[]{0, 1, 2, 0, 1, 2}, new Rng(4));
            l.total().backward();
            loss[m] = l.total().item();
            float[] grad = g.classEmbed.gradData();
            double nullRow = 0;
            for (int j = 0; j < g.config.width(); j++) nullRow += Math.abs(grad[3 * g.config.width() + j]);
            assertTrue(nullRow > 0, modes[m] + ": the null class must be trained");
            assertNotNull(g.wEmbed.fc1().weight.gradData(), modes[m] + ": the guidance embedding must be trained");
        }
        // same weights, same data, same draws of w: only the combination differs
        assertTrue(Math.abs(loss[0] - loss[1]) > 1e-6 * Math.abs(loss[0]), "whole-network " + loss[0] + " vs stage-wise " + loss[1]);
    }

    @Test
    void resumedRunEqualsUninterruptedRun(@TempDir Path tmp) throws IOException {
        int threads = Parallel.threads();
        Parallel.setThreads(1);
        try {
            resumeCase(tmp);
        } finally {
            Parallel.setThreads(threads);
        }
    }

    private void resumeCase(Path tmp) throws IOException {
        FrozenFlow ff = FrozenFlow.of(Fixtures.trainedFlow());
        ImageDataset data = Fixtures.images(40, 5); // epochs wrap inside 6 steps of 16
        BackwardConfig c = Fixtures.gConfig();
        TrainConfig tc = Fixtures.train(6).withWarmup(2).withEma(0.9).withGradClip(1.0).withCheckpointEvery(3);
        BiFlowModel a = new BiFlowModel(c, new Rng(1));
        new BackwardTrainer(ff, a, data, tc, List.of(), null).run(QUIET);

        BiFlowModel b = new BiFlowModel(c, new Rng(1));
        new BackwardTrainer(ff, b, data, tc, List.of(), tmp).runUntil(3, QUIET); // "killed" after step 3
        BiFlowModel b2 = new BiFlowModel(c, new Rng(99)); // a fresh process with other weights
        BackwardTrainer t2 = new BackwardTrainer(ff, b2, data, tc, List.of(), null);
        t2.resume(tmp);
        assertEquals(3, t2.step());
        t2.run(QUIET);
        for (var e : a.stateDict().entrySet())
            assertArrayEquals(e.getValue().data(), b2.stateDict().get(e.getKey()).data(), "parameter " + e.getKey() + " differs after resume");
        // the checkpoint carries what sampling needs
        BackwardCheckpoints.Loaded l = BackwardCheckpoints.read(tmp.resolve(BackwardTrainer.MODEL_FILE));
        assertEquals(Fixtures.SIGMA, l.sigma());
        assertEquals(ff.describe(), l.forwardConfig());
        assertArrayEquals(Fixtures.trainedFlow().var.data(), l.model().priorVar.data(), "G keeps F's prior variance");
        // with EMA on, G's EMA weights are written beside it (step 3: the killed run's last checkpoint)
        BackwardCheckpoints.Loaded ema = BackwardCheckpoints.read(tmp.resolve(BackwardTrainer.EMA_FILE));
        assertEquals("0.9", ema.metadata().get("ema_decay"));
        assertEquals(Fixtures.SIGMA, ema.sigma());
        BiFlowModel c3 = new BiFlowModel(c, new Rng(1));
        BackwardTrainer t3 = new BackwardTrainer(ff, c3, data, tc, List.of(), null);
        t3.runUntil(3, QUIET);
        t3.ema().swap(); // the EMA an uninterrupted run holds at step 3
        boolean anyDiffers = false;
        for (var e : c3.stateDict().entrySet()) {
            assertArrayEquals(e.getValue().data(), ema.model().stateDict().get(e.getKey()).data(), "EMA parameter " + e.getKey());
            anyDiffers |= !java.util.Arrays.equals(e.getValue().data(), l.model().stateDict().get(e.getKey()).data());
        }
        assertTrue(anyDiffers, "the EMA file holds the averaged weights, not a copy of the raw ones");
        // resuming into another configuration is refused
        BackwardTrainer wrong = new BackwardTrainer(ff, new BiFlowModel(c.withStrategy(BackwardConfig.Strategy.NAIVE), new Rng(1)), data, tc, List.of(), null);
        assertMsg(() -> wrong.resume(tmp), "differs from");
    }

    @Test
    void divergenceStopsAndKeepsTheLastGoodCheckpoint(@TempDir Path tmp) throws IOException {
        FrozenFlow ff = FrozenFlow.of(Fixtures.trainedFlow());
        ImageDataset good = Fixtures.images(16, 5);
        BiFlowModel g = new BiFlowModel(Fixtures.gConfig(), new Rng(1));
        new BackwardTrainer(ff, g, good, Fixtures.train(2).withCheckpointEvery(1), List.of(), tmp).run(QUIET);
        byte[] before = Files.readAllBytes(tmp.resolve(BackwardTrainer.MODEL_FILE));
        float[] px = good.pixels.clone();
        java.util.Arrays.fill(px, Float.NaN);
        ImageDataset bad = new ImageDataset("nan", px, good.labels, 1, 8, 8, 3);
        BackwardTrainer t = new BackwardTrainer(ff, g, bad, Fixtures.train(50).withCheckpointEvery(1).withMaxBadSteps(3), List.of(), tmp);
        List<BackwardTrainer.StepStats> seen = new ArrayList<>();
        TrainingDivergedException e = assertThrows(TrainingDivergedException.class, () -> t.run(new BackwardTrainer.Listener() {
            @Override public void onStep(BackwardTrainer.StepStats s) { seen.add(s); }
        }));
        assertEquals(3, seen.size());
        assertTrue(seen.stream().allMatch(BackwardTrainer.StepStats::skipped));
        assertTrue(e.getMessage().contains("3 steps in a row"), e.getMessage());
        assertArrayEquals(before, Files.readAllBytes(tmp.resolve(BackwardTrainer.MODEL_FILE)), "checkpoint must be untouched");
        for (Tensor p : g.parameters()) for (float v : p.data()) assertTrue(Float.isFinite(v));
    }

    /** G's loop is F's (TrainLoop): the count of bad steps survives slices shorter than the limit. */
    @Test
    void theStopFiresWhenSlicesAreShorterThanTheLimit(@TempDir Path tmp) throws IOException {
        FrozenFlow ff = FrozenFlow.of(Fixtures.trainedFlow());
        ImageDataset good = Fixtures.images(16, 5);
        float[] px = good.pixels.clone();
        java.util.Arrays.fill(px, Float.NaN);
        ImageDataset bad = new ImageDataset("nan", px, good.labels, 1, 8, 8, 3);
        BackwardTrainer t = new BackwardTrainer(ff, new BiFlowModel(Fixtures.gConfig(), new Rng(1)), bad,
                Fixtures.train(50).withCheckpointEvery(1).withMaxBadSteps(3), List.of(), tmp);
        List<BackwardTrainer.StepStats> seen = new ArrayList<>();
        TrainingDivergedException e = assertThrows(TrainingDivergedException.class, () -> {
            while (t.step() < 50) t.runUntil(t.step() + 1, new BackwardTrainer.Listener() {
                @Override public void onStep(BackwardTrainer.StepStats s) { seen.add(s); }
            });
        });
        assertEquals(3, seen.size());
        assertTrue(e.getMessage().contains("3 steps in a row"), e.getMessage());
    }

    @Test
    void nonFiniteWeightsAreNeverCheckpointed(@TempDir Path tmp) throws IOException {
        FrozenFlow ff = FrozenFlow.of(Fixtures.trainedFlow());
        BiFlowModel g = new BiFlowModel(Fixtures.gConfig(), new Rng(1));
        BackwardTrainer t = new BackwardTrainer(ff, g, Fixtures.images(16, 5), Fixtures.train(4).withCheckpointEvery(2).withMaxBadSteps(100).withEma(0.9),
                List.of(), tmp);
        t.runUntil(2, QUIET);
        byte[] good = Files.readAllBytes(tmp.resolve(BackwardTrainer.MODEL_FILE)), goodEma = Files.readAllBytes(tmp.resolve(BackwardTrainer.EMA_FILE));
        g.parameters().get(1).data()[0] = Float.POSITIVE_INFINITY;
        TrainingDivergedException e = assertThrows(TrainingDivergedException.class, () -> t.run(QUIET));
        assertTrue(e.getMessage().contains("infinite") && e.getMessage().contains("no checkpoint was written"), e.getMessage());
        assertArrayEquals(good, Files.readAllBytes(tmp.resolve(BackwardTrainer.MODEL_FILE)));
        assertArrayEquals(goodEma, Files.readAllBytes(tmp.resolve(BackwardTrainer.EMA_FILE)));
        // and a NaN checkpoint made by hand is refused by the loader, with a way to load it anyway
        BackwardCheckpoints.save(g, tmp.resolve("broken.safetensors"), null);
        IllegalArgumentException le = assertThrows(IllegalArgumentException.class, () -> BackwardCheckpoints.read(tmp.resolve("broken.safetensors")));
        assertTrue(le.getMessage().contains("broken.safetensors") && le.getMessage().contains("1 infinite") && le.getMessage().contains("--allow-nonfinite"),
                le.getMessage());
        dev.biflow.flow.model.Checkpoints.setAllowNonFinite(true);
        try {
            assertNotNull(BackwardCheckpoints.read(tmp.resolve("broken.safetensors")));
        } finally {
            dev.biflow.flow.model.Checkpoints.setAllowNonFinite(false);
        }
    }

    @Test
    void badTrainingInputsAreRejected() {
        TarFlow f = Fixtures.trainedFlow();
        FrozenFlow ff = FrozenFlow.of(f);
        ImageDataset data = Fixtures.images(16, 5);
        BiFlowModel g = new BiFlowModel(Fixtures.gConfig(), new Rng(1));
        BackwardTrainer t = new BackwardTrainer(ff, g, data, Fixtures.train(1), List.of(), null);
        assertMsg(() -> t.objective(Tensor.zeros(2, 1, 4, 4), new int[]{0, 1}, new Rng(1)), "(B, 1, 8, 8)");
        assertMsg(() -> t.objective(Fixtures.clean(data, 2), new int[]{0, 3}, new Rng(1)), "training label 3");
        assertMsg(() -> t.objective(Fixtures.clean(data, 2), null, new Rng(1)), "pass labels");
        assertMsg(() -> t.objective(Fixtures.clean(data, 2), new int[]{0}, new Rng(1)), "1 labels for a batch of 2");
        ImageDataset big = new ImageDataset("16x16", new float[2 * 256], new int[2], 1, 16, 16, 3);
        assertMsg(() -> new BackwardTrainer(ff, g, big, Fixtures.train(1), List.of(), null), "1x8x8 images");
        BiFlowModel wrongG = new BiFlowModel(BackwardConfig.forFlow(new dev.biflow.flow.model.TarFlowConfig(1, 8, 4, 16, 2, 1, 3, 8,
                dev.biflow.flow.model.NormControl.SOFT, 3f)), new Rng(1));
        assertMsg(() -> new BackwardTrainer(ff, wrongG, data, Fixtures.train(1), List.of(), null), "does not fit the forward model");
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> new BackwardTrainer(ff, g, data, Fixtures.train(1), List.of(), null).checkpoint());
        assertTrue(e.getMessage().contains("without a checkpoint folder"), e.getMessage());
    }
}
