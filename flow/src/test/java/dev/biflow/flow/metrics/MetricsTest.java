// Metrics end to end on a tiny FashionNet-eval: embedding, the report, the real-vs-real reference.
package dev.biflow.flow.metrics;

import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.kernels.Parallel;
import dev.biflow.flow.data.ImageDataset;
import dev.biflow.flow.features.FeatureNet;
import dev.biflow.flow.features.FeatureNetConfig;
import dev.biflow.flow.features.FeatureNets;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;
import java.util.List;

import static org.junit.jupiter.api.Assertions.*;

class MetricsTest {
    int threads;

    @BeforeEach
    void single() { threads = Parallel.threads(); Parallel.setThreads(1); }

    @AfterEach
    void restore() { Parallel.setThreads(threads); }

    static FeatureNetConfig tinyEval() {
        return new FeatureNetConfig(FeatureNetConfig.Arch.EVAL, 1, 8, 4, List.of(4, 8), List.of(1, 1), 3, 16);
    }

    static ImageDataset blobs(int n, long seed) {
        Rng r = new Rng(seed);
        float[] px = new float[n * 64];
        int[] lab = new int[n];
        for (int i = 0; i < n; i++) {
            lab[i] = r.nextInt(4);
            for (int j = 0; j < 64; j++) {
                boolean on = (j / 8) / 4 * 2 + (j % 8) / 4 == lab[i];
                px[i * 64 + j] = on ? 150 + r.nextInt(100) : r.nextInt(80);
            }
        }
        return new ImageDataset("blobs", px, lab, 1, 8, 8, 4);
    }

    @Test
    void embeddingHasFeaturesAndProbabilities() {
        Metrics m = new Metrics(FeatureNets.build(tinyEval(), new Rng(1)), 7, 3);
        ImageDataset d = blobs(20, 1);
        int[] idx = new int[20];
        for (int i = 0; i < 20; i++) idx[i] = i;
        Metrics.Embedding e = m.embed(d, idx);
        assertEquals(20, e.n());
        assertEquals(16, e.dim());
        assertEquals(4, e.numClasses());
        for (int i = 0; i < 20; i++) {
            double s = 0;
            for (int c = 0; c < 4; c++) s += e.probs()[i * 4 + c];
            assertEquals(1, s, 1e-5);
        }
        // the tensor path gives the same numbers as the dataset path, in any batching
        Metrics.Embedding t = new Metrics(m.net(), 20, 3).embed(d.batch(idx, ImageDataset.Noise.NONE, 0, null));
        assertArrayEquals(e.features(), t.features(), 1e-6f);
    }

    @Test
    void aSetAgainstItselfScoresPerfectly() {
        Metrics m = new Metrics(FeatureNets.build(tinyEval(), new Rng(1)));
        ImageDataset d = blobs(60, 2);
        int[] idx = new int[60];
        for (int i = 0; i < 60; i++) idx[i] = i;
        Tensor x = d.batch(idx, ImageDataset.Noise.NONE, 0, null);
        Metrics.Report r = m.evaluate(x, d.labelsOf(idx), m.embed(x));
        assertEquals(0, r.fd(), 1e-4);
        assertEquals(1.0, r.precision());
        assertEquals(1.0, r.recall());
        assertTrue(r.classifierScore() >= 1.0 && r.classifierScore() <= 4.0);
        assertTrue(r.classConsistency() >= 0 && r.classConsistency() <= 1);
        // noise images are far from the data: FD grows, precision drops
        Tensor noise = Tensor.rand(new Rng(3), 60, 1, 8, 8);
        Metrics.Report bad = m.evaluate(noise, null, m.embed(x));
        assertTrue(bad.fd() > r.fd() + 1e-3, bad.toString());
        assertTrue(Double.isNaN(bad.classConsistency()));
        assertTrue(bad.toJson().contains("\"fd_fashionnet\""), bad.toJson());
        assertTrue(bad.toString().contains("FD-FashionNet"));
    }

    @Test
    void referenceComparesHeldOutWithATrainingSubset() {
        Metrics m = new Metrics(FeatureNets.build(tinyEval(), new Rng(1)));
        Metrics.Reference ref = m.reference(blobs(40, 4), blobs(100, 5), 30, 0);
        assertEquals(30, ref.report().n());
        assertEquals(30, ref.report().nReal());
        assertEquals(30, ref.real().n());
        assertFalse(Double.isNaN(ref.report().classConsistency()));
        assertTrue(ref.report().fd() >= 0);
    }

    @Test
    void onlyTheEvaluationNetworkGrades(@TempDir Path dir) throws Exception {
        FeatureNet lpipsNet = FeatureNets.build(new FeatureNetConfig(FeatureNetConfig.Arch.CONVNET, 1, 8, 4,
                List.of(4, 8), List.of(1, 1), 3, 16), new Rng(0));
        var ex = assertThrows(IllegalArgumentException.class, () -> new Metrics(lpipsNet));
        assertTrue(ex.getMessage().contains("FashionNet-eval"), ex.getMessage());
        Path p = dir.resolve("eval.safetensors");
        FeatureNets.save(FeatureNets.build(tinyEval(), new Rng(2)), p, null);
        assertEquals(FeatureNetConfig.Arch.EVAL, Metrics.load(p).net().config.arch());
        Path q = dir.resolve("lpips.safetensors");
        FeatureNets.save(lpipsNet, q, null);
        assertThrows(IllegalArgumentException.class, () -> Metrics.load(q));
    }
}
