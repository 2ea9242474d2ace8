// Classifier score, class consistency and precision/recall on sets whose answers are known.
package dev.biflow.flow.metrics;

import dev.biflow.engine.Rng;
import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.*;

class ScoresTest {
    static float[] oneHot(int[] classes, int k) {
        float[] p = new float[classes.length * k];
        for (int i = 0; i < classes.length; i++) p[i * k + classes[i]] = 1f;
        return p;
    }

    @Test
    void classifierScoreOfUniformPredictionsIsOne() {
        int n = 50, k = 10;
        float[] p = new float[n * k];
        java.util.Arrays.fill(p, 0.1f);
        assertEquals(1.0, ClassifierScore.compute(p, n, k), 1e-6);
    }

    @Test
    void classifierScoreOfConfidentBalancedPredictionsIsTheClassCount() {
        int k = 10;
        int[] c = new int[100];
        for (int i = 0; i < c.length; i++) c[i] = i % k;
        assertEquals(10.0, ClassifierScore.compute(oneHot(c, k), c.length, k), 1e-9);
        // confident but always the same class: no diversity, score 1
        assertEquals(1.0, ClassifierScore.compute(oneHot(new int[20], k), 20, k), 1e-9);
        // confident, two classes balanced: 2
        int[] two = new int[40];
        for (int i = 0; i < 40; i++) two[i] = i % 2 == 0 ? 3 : 7;
        assertEquals(2.0, ClassifierScore.compute(oneHot(two, k), 40, k), 1e-9);
    }

    @Test
    void classConsistencyCountsArgmaxHits() {
        float[] p = {0.7f, 0.2f, 0.1f, 0.1f, 0.3f, 0.6f, 0.5f, 0.4f, 0.1f, 0.2f, 0.2f, 0.6f};
        assertEquals(0.75, ClassConsistency.compute(p, 4, 3, new int[]{0, 2, 1, 2}), 1e-12);
        assertEquals(1.0, ClassConsistency.compute(p, 4, 3, new int[]{0, 2, -1, 2}), 1e-12, "negative labels are unconditional, skipped");
        assertTrue(Double.isNaN(ClassConsistency.compute(p, 4, 3, new int[]{-1, -1, -1, -1})));
        assertThrows(IllegalArgumentException.class, () -> ClassConsistency.compute(p, 4, 3, new int[]{0, 3, 0, 0}));
    }

    static float[] cloud(Rng r, int n, int d, float centre, float spread) {
        float[] x = new float[n * d];
        for (int i = 0; i < x.length; i++) x[i] = centre + spread * (float) r.nextGaussian();
        return x;
    }

    @Test
    void identicalSetsHavePrecisionAndRecallOne() {
        float[] x = cloud(new Rng(1), 300, 8, 5f, 1f);
        PrecisionRecall.Result r = PrecisionRecall.compute(x, 300, x.clone(), 300, 8, 3);
        assertEquals(1.0, r.precision(), 1e-12);
        assertEquals(1.0, r.recall(), 1e-12);
    }

    @Test
    void disjointFarApartSetsHaveZero() {
        Rng r = new Rng(2);
        PrecisionRecall.Result res = PrecisionRecall.compute(cloud(r, 200, 8, 0f, 1f), 200, cloud(r, 150, 8, 100f, 1f), 150, 8, 3);
        assertEquals(0.0, res.precision());
        assertEquals(0.0, res.recall());
    }

    @Test
    void collapsedSamplesArePreciseButMissTheVariety() {
        Rng r = new Rng(3);
        int d = 4, half = 200;
        // real data: two far clusters; samples: only the first
        float[] real = new float[2 * half * d];
        System.arraycopy(cloud(r, half, d, 0f, 1f), 0, real, 0, half * d);
        System.arraycopy(cloud(r, half, d, 50f, 1f), 0, real, half * d, half * d);
        float[] fake = cloud(r, half, d, 0f, 1f);
        PrecisionRecall.Result res = PrecisionRecall.compute(real, 2 * half, fake, half, d, 3);
        assertTrue(res.precision() > 0.9, "precision " + res.precision());
        assertTrue(res.recall() > 0.4 && res.recall() < 0.55, "recall " + res.recall());
    }

    @Test
    void kthNeighbourOnALine() {
        float[] x = {0, 1, 3, 6, 10}; // 1-D
        float[] r1 = PrecisionRecall.kthNeighbourSq(x, 5, 1, 1);
        assertArrayEquals(new float[]{1, 1, 4, 9, 16}, r1, 1e-4f);
        float[] r2 = PrecisionRecall.kthNeighbourSq(x, 5, 1, 2);
        assertArrayEquals(new float[]{9, 4, 9, 16, 49}, r2, 1e-4f);
        assertThrows(IllegalArgumentException.class, () -> PrecisionRecall.kthNeighbourSq(x, 5, 1, 5));
    }
}
