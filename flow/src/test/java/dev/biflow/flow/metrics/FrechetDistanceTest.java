// Frechet distance: closed forms (diagonal, general 2x2, mean shift), symmetry, zero on a set with itself.
package dev.biflow.flow.metrics;

import dev.biflow.engine.Rng;
import org.apache.commons.math3.linear.Array2DRowRealMatrix;
import org.apache.commons.math3.linear.RealMatrix;
import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.*;

class FrechetDistanceTest {
    @Test
    void diagonalCovariancesMatchTheClosedForm() {
        double[] m1 = {0, 1, -2}, m2 = {1, 1, 0};
        double[] a = {1, 4, 0.25}, b = {9, 1, 0.25};
        double expected = 1 + 0 + 4; // |mu1 - mu2|^2
        for (int i = 0; i < 3; i++) expected += Math.pow(Math.sqrt(a[i]) - Math.sqrt(b[i]), 2);
        assertEquals(expected, FrechetDistance.distance(m1, diag(a), m2, diag(b)), 1e-10);
    }

    /** For 2x2 PSD A, B: tr sqrt(A^(1/2) B A^(1/2)) = sqrt(tr(AB) + 2 sqrt(det A det B)). */
    @Test
    void generalTwoByTwoMatchesTheClosedForm() {
        Rng r = new Rng(4);
        for (int t = 0; t < 20; t++) {
            double[][] a = randomSpd(r, 2), b = randomSpd(r, 2);
            double trAB = a[0][0] * b[0][0] + a[0][1] * b[1][0] + a[1][0] * b[0][1] + a[1][1] * b[1][1];
            double detA = a[0][0] * a[1][1] - a[0][1] * a[1][0], detB = b[0][0] * b[1][1] - b[0][1] * b[1][0];
            double cross = Math.sqrt(trAB + 2 * Math.sqrt(detA * detB));
            double expected = a[0][0] + a[1][1] + b[0][0] + b[1][1] - 2 * cross;
            double[] zero = {0, 0};
            assertEquals(expected, FrechetDistance.distance(zero, a, zero, b), 1e-9 * (1 + expected));
        }
    }

    @Test
    void symmetricInItsArguments() {
        Rng r = new Rng(5);
        for (int d : new int[]{3, 8, 20}) {
            double[][] a = randomSpd(r, d), b = randomSpd(r, d);
            double[] m1 = new double[d], m2 = new double[d];
            for (int i = 0; i < d; i++) { m1[i] = r.nextGaussian(); m2[i] = r.nextGaussian(); }
            double ab = FrechetDistance.distance(m1, a, m2, b), ba = FrechetDistance.distance(m2, b, m1, a);
            assertEquals(ab, ba, 1e-8 * ab);
            assertTrue(ab > 0);
        }
    }

    @Test
    void aSetWithItselfIsZeroAndAMeanShiftAddsItsSquaredLength() {
        Rng r = new Rng(6);
        int n = 400, d = 6;
        float[] x = new float[n * d];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < d; j++) x[i * d + j] = (float) (r.nextGaussian() * (j + 1) + (j == 0 ? 0.5 * x[i * d + 1] : 0));
        FrechetDistance.Gaussian g = FrechetDistance.fit(x, n, d);
        assertEquals(0, FrechetDistance.distance(g, g), 1e-9);
        double[] shift = {1, -2, 0.5, 0, 3, 1};
        double len2 = 0;
        for (double v : shift) len2 += v * v;
        float[] y = x.clone();
        for (int i = 0; i < n; i++) for (int j = 0; j < d; j++) y[i * d + j] += (float) shift[j];
        double fd = FrechetDistance.distance(g, FrechetDistance.fit(y, n, d));
        assertEquals(len2, fd, 1e-3 * len2);
        // growing with the shift: twice the shift, four times the distance
        for (int i = 0; i < n; i++) for (int j = 0; j < d; j++) y[i * d + j] += (float) shift[j];
        assertEquals(4 * len2, FrechetDistance.distance(g, FrechetDistance.fit(y, n, d)), 4e-3 * len2);
    }

    @Test
    void fitUsesTheUnbiasedCovariance() {
        float[] x = {1, 2, 3, 6, 5, 4}; // 3 samples of 2 features
        FrechetDistance.Gaussian g = FrechetDistance.fit(x, 3, 2);
        assertArrayEquals(new double[]{3, 4}, g.mean(), 1e-12);
        // deviations (-2,-2), (0,2), (2,0): sums of products / (n - 1)
        assertEquals(4, g.cov()[0][0], 1e-12);
        assertEquals(4, g.cov()[1][1], 1e-12);
        assertEquals(2, g.cov()[0][1], 1e-12);
        assertEquals(2, g.cov()[1][0], 1e-12);
        assertThrows(IllegalArgumentException.class, () -> FrechetDistance.fit(new float[]{1, 2}, 1, 2));
    }

    @Test
    void squareRootOfAPsdMatrixSquaresBack() {
        double[][] a = randomSpd(new Rng(8), 5);
        RealMatrix r = FrechetDistance.sqrtPsd(new Array2DRowRealMatrix(a));
        RealMatrix back = r.multiply(r);
        for (int i = 0; i < 5; i++) for (int j = 0; j < 5; j++) assertEquals(a[i][j], back.getEntry(i, j), 1e-9);
        // a singular PSD matrix (rank 1) has a finite root; negative rounding is clamped
        double[][] s = {{1, 1}, {1, 1}};
        assertEquals(Math.sqrt(2), FrechetDistance.traceSqrtPsd(new Array2DRowRealMatrix(s)), 1e-12);
    }

    static double[][] diag(double[] v) {
        double[][] m = new double[v.length][v.length];
        for (int i = 0; i < v.length; i++) m[i][i] = v[i];
        return m;
    }

    /** A A^T + 0.1 I for a random A. */
    static double[][] randomSpd(Rng r, int d) {
        double[][] a = new double[d][d];
        for (double[] row : a) for (int j = 0; j < d; j++) row[j] = r.nextGaussian();
        double[][] s = new double[d][d];
        for (int i = 0; i < d; i++)
            for (int j = 0; j < d; j++) {
                double v = 0;
                for (int k = 0; k < d; k++) v += a[i][k] * a[j][k];
                s[i][j] = v + (i == j ? 0.1 : 0);
            }
        return s;
    }
}
