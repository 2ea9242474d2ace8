// The classifier trainer: learns a synthetic task in a few steps, honours its budgets, augments as documented.
package dev.biflow.flow.features;

import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.kernels.Parallel;
import dev.biflow.flow.data.ImageDataset;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.List;

import static org.junit.jupiter.api.Assertions.*;

class FeatureNetTrainerTest {
    int threads;

    @BeforeEach
    void single() { threads = Parallel.threads(); Parallel.setThreads(1); }

    @AfterEach
    void restore() { Parallel.setThreads(threads); }

    static FeatureNetTrainer.Options quick(long steps) {
        return FeatureNetTrainer.Options.defaults(0).withSteps(steps).withBatch(32).withWarmup(5).withLr(1e-2)
                .withAugment(1, false).withLogEvery(0);
    }

    @Test
    void everyArchitectureLearnsTheSyntheticTask() {
        ImageDataset train = TinyNets.quadrants(512, 1), test = TinyNets.quadrants(200, 2);
        for (FeatureNetConfig cfg : TinyNets.all()) {
            FeatureNet net = FeatureNets.build(cfg, new Rng(3));
            double before = FeatureNetTrainer.accuracy(net, test, 64);
            FeatureNetTrainer.Result r = FeatureNetTrainer.train(net, train, test, quick(60), null);
            assertEquals(60, r.steps());
            assertTrue(r.testAccuracy() >= 0.9, cfg.arch().id + ": accuracy " + r.testAccuracy() + " (before " + before + ")");
            assertTrue(r.trainLoss() < 1.0, cfg.arch().id + ": loss " + r.trainLoss());
            assertFalse(net.isTraining());
            for (Tensor p : net.parameters()) assertFalse(p.needsGrad(), "left frozen after training");
        }
    }

    @Test
    void aStepBudgetIsReproducible() {
        ImageDataset train = TinyNets.quadrants(128, 1);
        float[][] w = new float[2][];
        for (int run = 0; run < 2; run++) {
            FeatureNet net = FeatureNets.build(TinyNets.convnet(), new Rng(3));
            FeatureNetTrainer.train(net, train, null, quick(10).withAugment(2, true), null);
            w[run] = net.parameters().get(0).toArray();
        }
        assertArrayEquals(w[0], w[1]);
    }

    @Test
    void aTimeBudgetStopsEarlyAndLogs() {
        ImageDataset train = TinyNets.quadrants(128, 1);
        FeatureNet net = FeatureNets.build(TinyNets.convnet(), new Rng(3));
        List<String> lines = new ArrayList<>();
        List<FeatureNetTrainer.StepStats> steps = new ArrayList<>();
        FeatureNetTrainer.Listener text = FeatureNetTrainer.Listener.lines(lines::add);
        FeatureNetTrainer.Result r = FeatureNetTrainer.train(net, train, null,
                quick(1_000_000).withSeconds(0.3).withLogEvery(5), new FeatureNetTrainer.Listener() {
                    @Override public void onStep(FeatureNetTrainer.StepStats s) { steps.add(s); text.onStep(s); }

                    @Override public void onDone(String summary) { text.onDone(summary); }
                });
        assertTrue(r.steps() > 0 && r.steps() < 1_000_000, "steps " + r.steps());
        assertTrue(r.seconds() < 5, "seconds " + r.seconds());
        assertTrue(Double.isNaN(r.testAccuracy()));
        assertTrue(lines.getLast().contains("done"), lines.toString());
        // one report per 5 steps, in order, with the numbers a caller needs (no log line to parse)
        assertEquals(r.steps() / 5, steps.size(), "reports");
        for (int i = 0; i < steps.size(); i++) {
            FeatureNetTrainer.StepStats s = steps.get(i);
            assertEquals(5L * (i + 1), s.step());
            assertTrue(s.loss() > 0 && s.trainAccuracy() >= 0 && s.trainAccuracy() <= 1 && s.lr() > 0, s.toString());
            assertEquals(s.line(), lines.get(i));
        }
    }

    @Test
    void shiftsMoveContentAndFillWithBackground() {
        float[] img = new float[64];
        java.util.Arrays.fill(img, -1f);
        img[3 * 8 + 4] = 1f; // one bright pixel at (3, 4)
        Rng r = new Rng(9);
        boolean sawMove = false;
        for (int t = 0; t < 50; t++) {
            Tensor out = FeatureNetTrainer.augment(Tensor.of(img.clone(), 1, 1, 8, 8), r, 2, false);
            int bright = -1, count = 0;
            for (int i = 0; i < 64; i++) {
                if (out.data()[i] == 1f) { bright = i; count++; }
                else assertEquals(-1f, out.data()[i]);
            }
            assertEquals(1, count);
            int dy = bright / 8 - 3, dx = bright % 8 - 4;
            assertTrue(Math.abs(dy) <= 2 && Math.abs(dx) <= 2, "moved by " + dy + "," + dx);
            sawMove |= dy != 0 || dx != 0;
        }
        assertTrue(sawMove);
        Tensor same = Tensor.of(img.clone(), 1, 1, 8, 8);
        assertSame(same, FeatureNetTrainer.augment(same, r, 0, false));
    }

    @Test
    void flipsMirrorLeftRight() {
        float[] img = new float[16];
        for (int i = 0; i < 16; i++) img[i] = i;
        Rng r = new Rng(1);
        boolean flipped = false, kept = false;
        for (int t = 0; t < 20; t++) {
            float[] o = FeatureNetTrainer.augment(Tensor.of(img.clone(), 1, 1, 4, 4), r, 0, true).data();
            if (o[0] == 3f) {
                flipped = true;
                for (int y = 0; y < 4; y++) for (int x = 0; x < 4; x++) assertEquals(img[y * 4 + 3 - x], o[y * 4 + x]);
            } else {
                kept = true;
                assertArrayEquals(img, o);
            }
        }
        assertTrue(flipped && kept);
    }

    @Test
    void mismatchedDataIsAClearError() {
        FeatureNet net = FeatureNets.build(FeatureNetConfig.convnetDefault(), new Rng(0));
        var ex = assertThrows(IllegalArgumentException.class,
                () -> FeatureNetTrainer.train(net, TinyNets.quadrants(8, 1), null, quick(1), null));
        assertTrue(ex.getMessage().contains("8x8"), ex.getMessage());
    }
}
