package dev.biflow.spark;

import dev.biflow.cli.TrainerHooks;
import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.kernels.Parallel;
import dev.biflow.flow.inverse.BackwardConfig;
import dev.biflow.flow.inverse.BackwardTrainer;
import dev.biflow.flow.inverse.BiFlowModel;
import dev.biflow.flow.inverse.FrozenFlow;
import dev.biflow.flow.data.ImageDataset;
import dev.biflow.flow.model.TarFlow;
import dev.biflow.flow.train.ForwardTrainer;
import dev.biflow.flow.train.TrainConfig;
import org.apache.spark.api.java.JavaSparkContext;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Data-parallel steps on local[2]: two workers with half the batch each against one machine with the
 * whole batch (within float summation order: see TOL), one worker bit for bit, retries, a failed step
 * and the resume after it.
 */
class SparkTrainTest {
    static JavaSparkContext sc;
    @TempDir static Path dir;
    static ImageDataset data;
    /**
     * 1% of the 3 steps' largest move (lr 1e-3 each): AdamW's update m / sqrt(v) does not scale with the
     * gradient, so a component that is near zero moves by an amount its last bits decide, and the two
     * summation orders can differ there by a fraction of a step (seen: 6.5e-6).
     */
    static final float TOL = 0.01f * 3 * 1e-3f;

    @BeforeAll
    static void setUp() {
        sc = SparkFixture.start();
        Parallel.setThreads(1); // tasks run 1-threaded in local[N]: the one-machine reference too, for the bit-for-bit cases
        Rng r = new Rng(11);
        int n = 24;
        float[] px = new float[n * 64];
        int[] y = new int[n];
        for (int i = 0; i < px.length; i++) px[i] = r.nextInt(256);
        for (int i = 0; i < n; i++) y[i] = i % 3;
        data = new ImageDataset("tiny", px, y, 1, 8, 8, 3);
    }

    @AfterAll
    static void tearDown() { SparkFixture.stop(sc); }

    @AfterEach
    void noFault() { DataParallel.fault = null; }

    static TrainConfig cfg() { return TrainConfig.defaults(3).withBatch(8).withLr(1e-3).withWarmup(0).withCheckpointEvery(1); }

    /** F after 3 steps: on one machine (partitions 0) or over that many workers, checkpoints in run (or none). */
    static List<Tensor> forward(int partitions, Path run, long stop) throws Exception {
        ForwardTrainer t = new ForwardTrainer(SparkFixture.tinyFlow(3), data, cfg(), run);
        if (partitions > 0) DataParallel.forward(new SparkCommand.Session(sc, false, partitions), t, run);
        t.runUntil(stop, new ForwardTrainer.Listener() {});
        return t.model.parameters();
    }

    static float maxDiff(List<Tensor> a, List<Tensor> b) {
        float m = 0;
        for (int i = 0; i < a.size(); i++) {
            float[] x = a.get(i).data(), y = b.get(i).data();
            for (int j = 0; j < x.length; j++) m = Math.max(m, Math.abs(x[j] - y[j]));
        }
        return m;
    }

    static void assertBitEqual(List<Tensor> a, List<Tensor> b) {
        for (int i = 0; i < a.size(); i++) {
            float[] x = a.get(i).data(), y = b.get(i).data();
            for (int j = 0; j < x.length; j++) assertEquals(Float.floatToRawIntBits(x[j]), Float.floatToRawIntBits(y[j]), "parameter " + i + " value " + j);
        }
    }

    @Test
    void forwardTwoWorkersEqualOneMachineWithTheWholeBatch() throws Exception {
        List<Tensor> one = forward(0, null, 3), two = forward(2, null, 3), single = forward(1, null, 3);
        float d = maxDiff(one, two), moved = maxDiff(one, SparkFixture.tinyFlow(3).parameters());
        assertTrue(d <= TOL, "2 workers vs 1 machine: max |diff| " + d);
        assertTrue(moved > 10 * TOL, "the steps moved the weights by " + moved);
        assertBitEqual(one, single); // one worker: the same arithmetic as one machine
    }

    @Test
    void backwardTwoWorkersEqualOneMachineWithTheWholeBatch() throws Exception {
        TarFlow f = SparkFixture.tinyFlow(5);
        Path fFile = SparkFixture.save(f, dir.resolve("f-for-g.safetensors"));
        // hidden alignment, training-time CFG, adaptive weights (p = 1): the term values are gathered over the shards
        BackwardConfig bc = BackwardConfig.forFlow(f.config).withSize(16, 8, 1, 1);
        float[][] result = new float[3][];
        for (int partitions = 0; partitions <= 2; partitions++) {
            BiFlowModel g = new BiFlowModel(bc, new Rng(2));
            BackwardTrainer t = new BackwardTrainer(FrozenFlow.of(f), g, data, cfg(), List.of(), null);
            if (partitions > 0)
                DataParallel.backward(new SparkCommand.Session(sc, false, partitions), t, dir, fFile, new TrainerHooks.Perceptual("none", dir, 1f));
            t.runUntil(3, new BackwardTrainer.Listener() {});
            result[partitions] = DataParallel.flatten(g.parameters());
        }
        float d = 0;
        for (int j = 0; j < result[0].length; j++) d = Math.max(d, Math.abs(result[0][j] - result[2][j]));
        assertTrue(d <= TOL, "G, 2 workers vs 1 machine: max |diff| " + d);
        for (int j = 0; j < result[0].length; j++) assertEquals(Float.floatToRawIntBits(result[0][j]), Float.floatToRawIntBits(result[1][j]), "G, 1 worker, value " + j);
    }

    @Test
    void aFailedTaskIsRetriedAndAStepThatKeepsFailingStopsTheRunResumably() throws Exception {
        List<Tensor> clean = forward(2, dir.resolve("clean"), 3);
        // one lost task at step 2: Spark runs it again, the step is the same
        DataParallel.fault = (step, part, attempt) -> step == 2 && part == 1 && attempt == 0;
        assertBitEqual(clean, forward(2, dir.resolve("retried"), 3));
        // every attempt fails: the run stops at step 2, loudly, with step 1's checkpoint intact
        DataParallel.fault = (step, part, attempt) -> step == 2 && part == 1;
        Path run = dir.resolve("failed");
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> forward(2, run, 3));
        assertTrue(e.getMessage().contains("step 2") && e.getMessage().contains("--resume"), e.getMessage());
        DataParallel.fault = null;
        ForwardTrainer t = new ForwardTrainer(SparkFixture.tinyFlow(3), data, cfg(), run);
        DataParallel.forward(new SparkCommand.Session(sc, false, 2), t, run);
        t.resume(run);
        assertEquals(1, t.step());
        t.runUntil(3, new ForwardTrainer.Listener() {});
        assertBitEqual(clean, t.model.parameters()); // resumed = uninterrupted, bit for bit (the reduction order is fixed)
    }

    @Test
    void theCommandRunsDataParallel() throws Exception {
        Path idx = dir.resolve("idx");
        Files.createDirectories(idx);
        dev.biflow.cli.TinyIdx.writeSplit(idx, "train", 16, 1);
        dev.biflow.cli.TinyIdx.writeSplit(idx, "t10k", 8, 2);
        var r = SparkFixture.ok("spark", "--partitions", "2", "train-forward", "--data", idx.toString(), "--runs", dir.toString(), "--name", "cli",
                "--width", "16", "--blocks", "1", "--layers", "1", "--head-dim", "8", "--steps", "2", "--batch", "4", "--eval-images", "4");
        assertTrue(r.out().contains("data-parallel over 2 workers"), r.out());
        assertTrue(Files.exists(dir.resolve("cli").resolve(ForwardTrainer.MODEL_FILE)));
    }
}
