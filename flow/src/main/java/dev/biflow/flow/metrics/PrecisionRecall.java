// Improved precision and recall (Kynkaenniemi et al. 2019): k-NN manifold estimates in feature space.
package dev.biflow.flow.metrics;

import dev.biflow.engine.Grad;
import dev.biflow.engine.Ops;
import dev.biflow.engine.Tensor;

/**
 * Each set's manifold is the union of balls around its points, each ball's radius the distance
 * to the point's k-th nearest neighbour in the same set (itself excluded; k = 3 as in the paper).
 * Precision is the fraction of generated points inside the real manifold (are samples
 * realistic?), recall the fraction of real points inside the generated manifold (is the data's
 * variety covered?). A point on a ball's boundary counts as inside.
 *
 * <p>Distances are Euclidean, computed blockwise as |a|^2 + |b|^2 - 2 a.b with the engine's
 * GEMM in float (clamped at 0), so 10k x 10k sets take seconds; comparisons use squared
 * distances throughout.
 */
public final class PrecisionRecall {
    private PrecisionRecall() {}

    /** The paper's neighbourhood size. */
    public static final int DEFAULT_K = 3;
    /** Rows of the distance matrix computed at a time. */
    private static final int BLOCK = 512;

    public record Result(double precision, double recall) {}

    /** Precision and recall of fake (nf x d) against real (nr x d), both row-major. */
    public static Result compute(float[] real, int nr, float[] fake, int nf, int d, int k) {
        check(real, nr, d, k, "real");
        check(fake, nf, d, k, "fake");
        // distances do not change under a common shift; centring keeps |a|^2 + |b|^2 - 2 a.b accurate in float
        float[] mu = mean(real, nr, d);
        real = centred(real, nr, d, mu);
        fake = centred(fake, nf, d, mu);
        float[] rr = kthNeighbourSq(real, nr, d, k), rf = kthNeighbourSq(fake, nf, d, k);
        float[] nReal = sqNorms(real, nr, d), nFake = sqNorms(fake, nf, d);
        boolean[] fakeIn = new boolean[nf], realIn = new boolean[nr];
        for (int i0 = 0; i0 < nr; i0 += BLOCK) {
            int rows = Math.min(BLOCK, nr - i0);
            float[] dist = sqDistBlock(real, nReal, i0, rows, fake, nFake, nf, d); // (rows, nf)
            for (int i = 0; i < rows; i++) {
                float ri = rr[i0 + i];
                boolean covered = false;
                for (int j = 0; j < nf; j++) {
                    float v = dist[i * nf + j];
                    if (v <= ri) fakeIn[j] = true;
                    if (!covered && v <= rf[j]) covered = true;
                }
                realIn[i0 + i] = covered;
            }
        }
        return new Result(fraction(fakeIn), fraction(realIn));
    }

    /** Squared distance from each point to its k-th nearest other point in the same set. */
    public static float[] kthNeighbourSq(float[] x, int n, int d, int k) {
        check(x, n, d, k, "set");
        x = centred(x, n, d, mean(x, n, d));
        float[] norms = sqNorms(x, n, d);
        float[] out = new float[n];
        float[] best = new float[k];
        for (int i0 = 0; i0 < n; i0 += BLOCK) {
            int rows = Math.min(BLOCK, n - i0);
            float[] dist = sqDistBlock(x, norms, i0, rows, x, norms, n, d);
            for (int i = 0; i < rows; i++) {
                java.util.Arrays.fill(best, Float.POSITIVE_INFINITY); // ascending k smallest so far
                for (int j = 0; j < n; j++) {
                    if (j == i0 + i) continue;
                    float v = dist[i * n + j];
                    if (v >= best[k - 1]) continue;
                    int p = k - 1;
                    while (p > 0 && best[p - 1] > v) { best[p] = best[p - 1]; p--; }
                    best[p] = v;
                }
                out[i0 + i] = best[k - 1];
            }
        }
        return out;
    }

    private static void check(float[] x, int n, int d, int k, String what) {
        if (k < 1) throw new IllegalArgumentException("PrecisionRecall: k must be >= 1, got " + k);
        if ((long) n * d != x.length)
            throw new IllegalArgumentException("PrecisionRecall: " + what + " has " + x.length + " values, not " + n + " x " + d);
        if (n <= k)
            throw new IllegalArgumentException("PrecisionRecall: the " + what + " set has " + n + " points; k-NN radii with k = " + k
                    + " need more than " + k);
    }

    private static double fraction(boolean[] b) {
        int c = 0;
        for (boolean v : b) if (v) c++;
        return (double) c / b.length;
    }

    private static float[] mean(float[] x, int n, int d) {
        double[] m = new double[d];
        for (int i = 0; i < n; i++) for (int j = 0; j < d; j++) m[j] += x[i * d + j];
        float[] out = new float[d];
        for (int j = 0; j < d; j++) out[j] = (float) (m[j] / n);
        return out;
    }

    private static float[] centred(float[] x, int n, int d, float[] mu) {
        float[] out = new float[x.length];
        for (int i = 0; i < n; i++) for (int j = 0; j < d; j++) out[i * d + j] = x[i * d + j] - mu[j];
        return out;
    }

    static float[] sqNorms(float[] x, int n, int d) {
        float[] out = new float[n];
        for (int i = 0; i < n; i++) {
            double s = 0;
            for (int j = 0; j < d; j++) {
                float v = x[i * d + j];
                s += v * v;
            }
            out[i] = (float) s;
        }
        return out;
    }

    /** Squared distances of rows [i0, i0 + rows) of a to all nb rows of b: (rows, nb), row-major. */
    static float[] sqDistBlock(float[] a, float[] na, int i0, int rows, float[] b, float[] nb, int nbRows, int d) {
        float[] blk = java.util.Arrays.copyOfRange(a, i0 * d, (i0 + rows) * d);
        float[] dot;
        try (var ng = Grad.noGrad()) {
            dot = Ops.matmul(Tensor.of(blk, rows, d), Tensor.of(b, nbRows, d), false, true).data();
        }
        for (int i = 0; i < rows; i++) {
            float ai = na[i0 + i];
            for (int j = 0; j < nbRows; j++) {
                int o = i * nbRows + j;
                dot[o] = Math.max(0f, ai + nb[j] - 2f * dot[o]);
            }
        }
        return dot;
    }
}
