// The LayerNorm row kernels (Vector API) behind nn.LayerNorm and Fused.layerNorm: forward rows, input gradient
// rows, per-block parameter gradients.
package dev.biflow.engine.kernels;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;

/**
 * y = (x - mean) * rstd * w + b per row of length d, rstd = 1/sqrt(var + eps) with the biased
 * variance (PyTorch). The forward saves mean and rstd per row; the backward recomputes
 * xhat = (x - mean) * rstd from them instead of keeping a second copy of the activations.
 * w and b may be null (no affine). Lane sums use {@link Vec#sumLanes} so results are the
 * same in every JIT tier.
 */
public final class LayerNormKernel {
    private LayerNormKernel() {}

    private static final VectorSpecies<Float> S = FloatVector.SPECIES_PREFERRED;
    private static final int L = S.length();

    /** Forward for rows [lo, hi). Two-pass variance: (x - mean)^2 summed after the mean is known. */
    public static void forward(float[] x, float[] w, float[] b, float[] y, float[] mean, float[] rstd,
                               int d, float eps, int lo, int hi) {
        forward(x, 0, d, w, b, y, 0, d, mean, rstd, d, eps, lo, hi);
    }

    /** The same with row r of x at xOff + r ldx and of y at yOff + r ldy (rows inside larger arrays). */
    public static void forward(float[] x, int xOff, int ldx, float[] w, float[] b, float[] y, int yOff, int ldy,
                               float[] mean, float[] rstd, int d, float eps, int lo, int hi) {
        float invD = 1f / d;
        for (int r = lo; r < hi; r++) {
            int off = xOff + r * ldx, yo = yOff + r * ldy;
            float mu = Vec.sum(x, off, d) * invD;
            FloatVector vmu = FloatVector.broadcast(S, mu);
            FloatVector acc = FloatVector.zero(S);
            int i = 0;
            for (int end = S.loopBound(d); i < end; i += L) {
                FloatVector t = FloatVector.fromArray(S, x, off + i).sub(vmu);
                acc = t.fma(t, acc);
            }
            float ss = Vec.sumLanes(acc);
            for (; i < d; i++) {
                float t = x[off + i] - mu;
                ss += t * t;
            }
            float rs = (float) (1.0 / Math.sqrt(ss * invD + eps));
            mean[r] = mu;
            rstd[r] = rs;
            FloatVector vrs = FloatVector.broadcast(S, rs);
            i = 0;
            for (int end = S.loopBound(d); i < end; i += L) {
                FloatVector t = FloatVector.fromArray(S, x, off + i).sub(vmu).mul(vrs);
                if (w != null) t = t.mul(FloatVector.fromArray(S, w, i));
                if (b != null) t = t.add(FloatVector.fromArray(S, b, i));
                t.intoArray(y, yo + i);
            }
            for (; i < d; i++) {
                float t = (x[off + i] - mu) * rs;
                if (w != null) t *= w[i];
                if (b != null) t += b[i];
                y[yo + i] = t;
            }
        }
    }

    /**
     * gx += rstd * (gh - mean(gh) - xhat * mean(gh * xhat)), gh = g * w, for rows [lo, hi).
     */
    public static void backwardInput(float[] g, float[] x, float[] w, float[] mean, float[] rstd, float[] gx,
                                     int d, int lo, int hi) {
        float invD = 1f / d;
        for (int r = lo; r < hi; r++) {
            int off = r * d;
            float mu = mean[r], rs = rstd[r];
            FloatVector vmu = FloatVector.broadcast(S, mu), vrs = FloatVector.broadcast(S, rs);
            FloatVector accA = FloatVector.zero(S), accC = FloatVector.zero(S);
            int i = 0;
            for (int end = S.loopBound(d); i < end; i += L) {
                FloatVector gh = FloatVector.fromArray(S, g, off + i);
                if (w != null) gh = gh.mul(FloatVector.fromArray(S, w, i));
                FloatVector xh = FloatVector.fromArray(S, x, off + i).sub(vmu).mul(vrs);
                accA = accA.add(gh);
                accC = gh.fma(xh, accC);
            }
            float a = Vec.sumLanes(accA), c = Vec.sumLanes(accC);
            for (; i < d; i++) {
                float gh = w != null ? g[off + i] * w[i] : g[off + i];
                float xh = (x[off + i] - mu) * rs;
                a += gh;
                c += gh * xh;
            }
            a *= invD;
            c *= invD;
            FloatVector va = FloatVector.broadcast(S, a), vc = FloatVector.broadcast(S, c);
            i = 0;
            for (int end = S.loopBound(d); i < end; i += L) {
                FloatVector gh = FloatVector.fromArray(S, g, off + i);
                if (w != null) gh = gh.mul(FloatVector.fromArray(S, w, i));
                FloatVector xh = FloatVector.fromArray(S, x, off + i).sub(vmu).mul(vrs);
                FloatVector t = gh.sub(va).sub(xh.mul(vc)).mul(vrs);
                t.add(FloatVector.fromArray(S, gx, off + i)).intoArray(gx, off + i);
            }
            for (; i < d; i++) {
                float gh = w != null ? g[off + i] * w[i] : g[off + i];
                float xh = (x[off + i] - mu) * rs;
                gx[off + i] += rs * (gh - a - xh * c);
            }
        }
    }

    /**
     * Partial parameter gradients of rows [lo, hi): pw[pOff + j] = sum_r g*xhat, pb[pOff + j] =
     * sum_r g (either array may be null). The caller sums fixed row blocks in a fixed order, so
     * the result does not depend on the thread count.
     */
    public static void paramPartials(float[] g, float[] x, float[] mean, float[] rstd, float[] pw, float[] pb, int pOff,
                                     int d, int lo, int hi) {
        for (int r = lo; r < hi; r++) {
            int off = r * d;
            FloatVector vmu = FloatVector.broadcast(S, mean[r]), vrs = FloatVector.broadcast(S, rstd[r]);
            float mu = mean[r], rs = rstd[r];
            int i = 0;
            for (int end = S.loopBound(d); i < end; i += L) {
                FloatVector vg = FloatVector.fromArray(S, g, off + i);
                if (pw != null) {
                    FloatVector xh = FloatVector.fromArray(S, x, off + i).sub(vmu).mul(vrs);
                    vg.fma(xh, FloatVector.fromArray(S, pw, pOff + i)).intoArray(pw, pOff + i);
                }
                if (pb != null) vg.add(FloatVector.fromArray(S, pb, pOff + i)).intoArray(pb, pOff + i);
            }
            for (; i < d; i++) {
                float gv = g[off + i];
                if (pw != null) pw[pOff + i] += gv * (x[off + i] - mu) * rs;
                if (pb != null) pb[pOff + i] += gv;
            }
        }
    }
}
