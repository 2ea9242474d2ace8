// Training loop: loss falls, resume is exact, divergence stops with the last good checkpoint intact.
package dev.biflow.flow.train;

import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.io.Idx;
import dev.biflow.engine.kernels.Parallel;
import dev.biflow.flow.data.ImageDataset;
import dev.biflow.flow.model.Checkpoints;
import dev.biflow.flow.model.NormControl;
import dev.biflow.flow.model.TarFlow;
import dev.biflow.flow.model.TarFlowConfig;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.*;

class ForwardTrainerTest {
    int threads;

    @BeforeEach
    void single() { threads = Parallel.threads(); Parallel.setThreads(1); }

    @AfterEach
    void restore() { Parallel.setThreads(threads); }

    /** 64 structured 8x8 images in 3 classes (bars at class-dependent rows). */
    static ImageDataset toyImages(int n) {
        Rng r = new Rng(5);
        float[] px = new float[n * 64];
        int[] lab = new int[n];
        for (int i = 0; i < n; i++) {
            lab[i] = i % 3;
            for (int y = 0; y < 8; y++)
                for (int x = 0; x < 8; x++) {
                    boolean on = (y % 3) == lab[i] || x == (i % 8);
                    px[i * 64 + y * 8 + x] = on ? 200 + r.nextInt(56) : r.nextInt(40);
                }
        }
        return new ImageDataset("toy", px, lab, 1, 8, 8, 3);
    }

    static TarFlowConfig smallConfig() {
        return new TarFlowConfig(1, 8, 2, 16, 2, 1, 3, 8, NormControl.SOFT, 3f);
    }

    static TrainConfig cfg(long steps) {
        return TrainConfig.defaults(steps).withBatch(16).withWarmup(2).withLr(3e-3).withSeed(11);
    }

    @Test
    void lossFallsOnStructuredImages() throws IOException {
        TarFlow m = new TarFlow(smallConfig(), new Rng(1));
        ForwardTrainer t = new ForwardTrainer(m, toyImages(96), cfg(120), null);
        List<Double> losses = new ArrayList<>();
        t.run(new ForwardTrainer.Listener() {
            @Override public void onStep(ForwardTrainer.StepStats s) { losses.add(s.loss()); }
        });
        double first = losses.subList(0, 10).stream().mapToDouble(d -> d).average().orElseThrow();
        double last = losses.subList(losses.size() - 10, losses.size()).stream().mapToDouble(d -> d).average().orElseThrow();
        assertTrue(last < first - 0.3, "loss should fall by > 0.3 nats/dim: first " + first + ", last " + last);
    }

    /**
     * sigma = 0 trains on uniformly dequantised pixels (the setting of published flows' bits/dim), not on the raw
     * 256-level grid: the first step's loss is the loss of the dequantised batch the trainer's seed draws.
     */
    @Test
    void sigmaZeroTrainsOnUniformlyDequantisedPixels() throws IOException {
        ImageDataset data = toyImages(32);
        TrainConfig c = cfg(2).withSigma(0f).withLabelDropout(0f);
        List<Double> losses = new ArrayList<>();
        new ForwardTrainer(new TarFlow(smallConfig(), new Rng(1)), data, c, null).run(new ForwardTrainer.Listener() {
            @Override public void onStep(ForwardTrainer.StepStats s) { losses.add(s.loss()); }
        });
        // the same draws as the trainer: its Rng(seed) first permutes the data, then dequantises the batch
        Rng r = new Rng(c.seed());
        int[] idx = java.util.Arrays.copyOf(r.permutation(data.n), c.batchSize());
        TarFlow fresh = new TarFlow(smallConfig(), new Rng(1));
        double dequant = TarFlow.loss(fresh.forward(data.batch(idx, ImageDataset.Noise.UNIFORM_DEQUANT, 0f, r), data.labelsOf(idx))).item();
        double raw = TarFlow.loss(fresh.forward(data.batch(idx, ImageDataset.Noise.NONE, 0f, null), data.labelsOf(idx))).item();
        assertEquals(dequant, losses.getFirst(), 1e-5 * Math.abs(dequant));
        assertNotEquals(raw, losses.getFirst(), 1e-5 * Math.abs(raw));
        assertEquals(ImageDataset.Noise.GAUSSIAN, ForwardTrainer.trainingNoise(0.1f));
    }

    @Test
    void resumedRunEqualsUninterruptedRun(@TempDir Path tmp) throws IOException {
        ImageDataset data = toyImages(40); // epochs wrap inside 6 steps of 16
        TarFlow a = new TarFlow(smallConfig(), new Rng(1));
        new ForwardTrainer(a, data, cfg(6).withEma(0.9).withGradClip(1.0), null).run(new ForwardTrainer.Listener() {});

        TarFlow b = new TarFlow(smallConfig(), new Rng(1));
        TrainConfig c = cfg(6).withEma(0.9).withGradClip(1.0).withCheckpointEvery(3);
        ForwardTrainer tb = new ForwardTrainer(b, data, c, tmp);
        tb.runUntil(3, new ForwardTrainer.Listener() {}); // "killed" after step 3
        // a fresh process: new model with other weights, resumed from disk
        TarFlow b2 = new TarFlow(smallConfig(), new Rng(99));
        ForwardTrainer tb2 = new ForwardTrainer(b2, data, c, null);
        tb2.resume(tmp);
        assertEquals(3, tb2.step());
        tb2.run(new ForwardTrainer.Listener() {});
        Map<String, Tensor> sa = a.stateDict(), sb = b2.stateDict();
        for (String k : sa.keySet()) assertArrayEquals(sa.get(k).data(), sb.get(k).data(), "parameter " + k + " differs after resume");
    }

    @Test
    void divergenceStopsAndKeepsLastGoodCheckpoint(@TempDir Path tmp) throws IOException {
        ImageDataset good = toyImages(32);
        TarFlow m = new TarFlow(smallConfig(), new Rng(1));
        ForwardTrainer t = new ForwardTrainer(m, good, cfg(2).withCheckpointEvery(1), tmp);
        t.run(new ForwardTrainer.Listener() {});
        byte[] before = Files.readAllBytes(tmp.resolve(ForwardTrainer.MODEL_FILE));
        // poisoned data: every loss is NaN
        float[] px = good.pixels.clone();
        java.util.Arrays.fill(px, Float.NaN);
        ImageDataset bad = new ImageDataset("nan", px, good.labels, 1, 8, 8, 3);
        ForwardTrainer t2 = new ForwardTrainer(m, bad, cfg(50).withCheckpointEvery(1).withMaxBadSteps(4), tmp);
        List<ForwardTrainer.StepStats> seen = new ArrayList<>();
        TrainingDivergedException e = assertThrows(TrainingDivergedException.class, () -> t2.run(new ForwardTrainer.Listener() {
            @Override public void onStep(ForwardTrainer.StepStats s) { seen.add(s); }
        }));
        assertEquals(4, seen.size());
        assertTrue(seen.stream().allMatch(ForwardTrainer.StepStats::skipped));
        assertTrue(e.getMessage().contains("4 steps in a row"), e.getMessage());
        assertArrayEquals(before, Files.readAllBytes(tmp.resolve(ForwardTrainer.MODEL_FILE)), "checkpoint must be untouched");
        // the skipped steps left the parameters finite
        for (Tensor p : m.parameters()) for (float v : p.data()) assertTrue(Float.isFinite(v));
        assertNotNull(Checkpoints.loadTarFlow(tmp.resolve(ForwardTrainer.MODEL_FILE)));
    }

    @Test
    void missingDatasetSaysHowToGetIt(@TempDir Path tmp) {
        IOException e = assertThrows(IOException.class, () -> ImageDataset.loadIdx(tmp, "train"));
        assertTrue(e.getMessage().contains("apt-get install dataset-fashion-mnist"), e.getMessage());
    }

    @Test
    void idxDirectoryLoadsAndEvaluatesBitsPerDim(@TempDir Path tmp) throws IOException {
        ImageDataset d = toyImages(12);
        Idx.write(tmp.resolve("t10k-images-idx3-ubyte.gz"), Idx.Type.UBYTE, Tensor.of(d.pixels.clone(), 12, 8, 8), true);
        Idx.writeLabels(tmp.resolve("t10k-labels-idx1-ubyte.gz"), d.labels, true);
        ImageDataset back = ImageDataset.loadIdx(tmp, "test");
        assertArrayEquals(d.pixels, back.pixels);
        assertArrayEquals(d.labels, back.labels);
        // an untrained (identity) flow: z = x, logdet = 0, so bpd is the Gaussian NLL of dequantised pixels
        TarFlow m = new TarFlow(new TarFlowConfig(1, 8, 2, 16, 1, 1, 10, 8, NormControl.NONE, 0f), new Rng(1));
        for (TarFlow.MetaBlock blk : m.blocks) dev.biflow.engine.nn.Init.zeros(blk.projOut.bias);
        double bpd = Evaluation.bitsPerDim(m, back, 12, 5, 3, null);
        double expect = 0;
        Rng r = new Rng(3);
        for (int i = 0; i < 12 * 64; i++) {
            double x = (back.pixels[i] + r.nextFloat()) / 128.0 - 1;
            expect += (0.5 * (x * x + Math.log(2 * Math.PI)) + Math.log(128)) / Math.log(2);
        }
        assertEquals(expect / (12 * 64), bpd, 1e-4);
    }
}
