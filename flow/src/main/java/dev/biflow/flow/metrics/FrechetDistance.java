// Frechet distance between Gaussians fitted to two feature sets (the FID formula, here on FashionNet-eval features).
package dev.biflow.flow.metrics;

import org.apache.commons.math3.linear.Array2DRowRealMatrix;
import org.apache.commons.math3.linear.EigenDecomposition;
import org.apache.commons.math3.linear.RealMatrix;

/**
 * The Frechet (2-Wasserstein) distance between N(mu1, S1) and N(mu2, S2):
 * <pre>
 *   FD = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr sqrt(S1^(1/2) S2 S1^(1/2))
 * </pre>
 * The cross term uses the symmetric form: tr sqrt(S1 S2) equals tr sqrt(S1^(1/2) S2 S1^(1/2))
 * (same eigenvalues), and the latter is a symmetric PSD matrix, so both square roots are eigen-
 * decompositions of symmetric matrices (commons-math3), with eigenvalues that are rounding noise
 * (below 1e-12 of the largest, or negative) set to 0. Everything is in double. With the features of {@code FashionNet-eval} this is
 * "FD-FashionNet", not FID: the numbers are comparable only across runs graded by the same
 * evaluation checkpoint, with the same sample count (the estimate is biased upwards at small n).
 */
public final class FrechetDistance {
    private FrechetDistance() {}

    /**
     * A Gaussian fitted to n samples: mean and unbiased (n - 1) covariance, as numpy.cov does.
     *
     * @param mean (d)
     * @param cov  (d, d), symmetric
     * @param n    samples it was fitted to
     */
    public record Gaussian(double[] mean, double[][] cov, int n) {
        public int dim() { return mean.length; }
    }

    /** Fits a Gaussian to n row-major feature vectors of dimension d (n >= 2). */
    public static Gaussian fit(float[] feats, int n, int d) {
        if (n < 2) throw new IllegalArgumentException("FrechetDistance.fit: need at least 2 samples for a covariance, got " + n);
        if ((long) n * d != feats.length)
            throw new IllegalArgumentException("FrechetDistance.fit: " + feats.length + " values are not " + n + " x " + d);
        double[] mu = new double[d];
        for (int i = 0; i < n; i++) for (int j = 0; j < d; j++) mu[j] += feats[i * d + j];
        for (int j = 0; j < d; j++) mu[j] /= n;
        double[][] cov = new double[d][d];
        double[] x = new double[d];
        for (int i = 0; i < n; i++) {
            for (int j = 0; j < d; j++) x[j] = feats[i * d + j] - mu[j];
            for (int a = 0; a < d; a++) {
                double xa = x[a];
                if (xa == 0) continue;
                double[] row = cov[a];
                for (int b = a; b < d; b++) row[b] += xa * x[b];
            }
        }
        for (int a = 0; a < d; a++)
            for (int b = a; b < d; b++) {
                cov[a][b] /= (n - 1);
                cov[b][a] = cov[a][b];
            }
        return new Gaussian(mu, cov, n);
    }

    /** FD between two fitted Gaussians of the same dimension. */
    public static double distance(Gaussian g1, Gaussian g2) {
        return distance(g1.mean(), g1.cov(), g2.mean(), g2.cov());
    }

    /** FD between N(mu1, s1) and N(mu2, s2); the covariances must be symmetric PSD. */
    public static double distance(double[] mu1, double[][] s1, double[] mu2, double[][] s2) {
        int d = mu1.length;
        if (mu2.length != d || s1.length != d || s2.length != d)
            throw new IllegalArgumentException("FrechetDistance: dimensions differ (" + d + " vs " + mu2.length
                    + "); both feature sets must come from the same network layer");
        double mean = 0;
        for (int i = 0; i < d; i++) {
            double t = mu1[i] - mu2[i];
            mean += t * t;
        }
        double tr1 = 0, tr2 = 0;
        for (int i = 0; i < d; i++) {
            tr1 += s1[i][i];
            tr2 += s2[i][i];
        }
        RealMatrix r1 = sqrtPsd(new Array2DRowRealMatrix(s1, true));
        RealMatrix m = r1.multiply(new Array2DRowRealMatrix(s2, false)).multiply(r1);
        double cross = traceSqrtPsd(m);
        // exact FD is >= 0; rounding can leave a tiny negative value for identical inputs
        return Math.max(0, mean + tr1 + tr2 - 2 * cross);
    }

    /** The symmetric PSD square root of a symmetric matrix (negative eigenvalues from rounding count as 0). */
    public static RealMatrix sqrtPsd(RealMatrix s) {
        EigenDecomposition e = new EigenDecomposition(symmetrize(s));
        double[] ev = clampTiny(e.getRealEigenvalues());
        RealMatrix v = e.getV();
        int d = ev.length;
        double[][] out = new double[d][d];
        double[][] vd = v.getData();
        for (int k = 0; k < d; k++) {
            double r = Math.sqrt(ev[k]);
            if (r == 0) continue;
            for (int i = 0; i < d; i++) {
                double vik = vd[i][k] * r;
                if (vik == 0) continue;
                for (int j = 0; j < d; j++) out[i][j] += vik * vd[j][k];
            }
        }
        return new Array2DRowRealMatrix(out, false);
    }

    /** tr sqrt(M) for a symmetric PSD M: the sum of the square roots of its (clamped) eigenvalues. */
    public static double traceSqrtPsd(RealMatrix m) {
        double[] ev = clampTiny(new EigenDecomposition(symmetrize(m)).getRealEigenvalues());
        double s = 0;
        for (double v : ev) s += Math.sqrt(v);
        return s;
    }

    /**
     * Eigenvalues below 1e-12 of the largest are rounding noise of a singular matrix (dead ReLU
     * units give features with zero variance); their square roots (1e-6 of the largest root) would
     * add up to a visible error, so they count as 0, and so do negative ones.
     */
    static double[] clampTiny(double[] ev) {
        double max = 0;
        for (double v : ev) max = Math.max(max, Math.abs(v));
        double tol = 1e-12 * max;
        double[] out = new double[ev.length];
        for (int i = 0; i < ev.length; i++) out[i] = ev[i] > tol ? ev[i] : 0;
        return out;
    }

    /** (M + M^T) / 2: removes the asymmetry rounding leaves in products of symmetric matrices. */
    static RealMatrix symmetrize(RealMatrix m) {
        int d = m.getRowDimension();
        double[][] a = m.getData();
        double[][] out = new double[d][d];
        for (int i = 0; i < d; i++)
            for (int j = 0; j < d; j++) out[i][j] = 0.5 * (a[i][j] + a[j][i]);
        return new Array2DRowRealMatrix(out, false);
    }
}
