// Vectorised exact (erf) GELU and its derivative: the transformer MLP's activation, hot in every training step.
package dev.biflow.engine.kernels;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

/**
 * gelu(x) = x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)), PyTorch's default form. erf uses
 * Abramowitz and Stegun 7.1.26 (absolute error below 1.5e-7, under float32 resolution of the
 * result), whose exp(-u^2) is {@link Softmax#exp}: plain lane arithmetic, so the whole activation
 * runs in vector registers and gives the same bits interpreted or JIT-compiled (the Vector API's
 * EXP intrinsic differs from its fallback by an ulp, which broke bit-exact resume).
 * The scalar reference is {@code Ops.erf} in double; tests compare the two.
 */
public final class Gelu {
    private Gelu() {}

    private static final VectorSpecies<Float> S = FloatVector.SPECIES_PREFERRED;
    private static final float INV_SQRT2 = (float) (1 / Math.sqrt(2));
    private static final float INV_SQRT_2PI = (float) (1 / Math.sqrt(2 * Math.PI));
    private static final float P = 0.3275911f, A1 = 0.254829592f, A2 = -0.284496736f, A3 = 1.421413741f,
            A4 = -1.453152027f, A5 = 1.061405429f;

    /**
     * erf(u) for one float: the vector path's operations one for one (the same fmas, the same order), so
     * a tail element gets the bits it would get in a lane and a result never depends on where a range was
     * split (threads, tiles).
     */
    public static float erf(float u) { return erf(u, Softmax.exp(-(u * u))); }

    /** erf(u) given g = exp(-u^2) (the backward pass reuses g for the Gaussian density). */
    private static float erf(float u, float g) {
        float a = Math.abs(u);
        float t = 1f / Math.fma(a, P, 1f);
        float poly = Math.fma(t, A5, A4);
        poly = Math.fma(poly, t, A3);
        poly = Math.fma(poly, t, A2);
        poly = Math.fma(poly, t, A1);
        poly = poly * t;
        float r = 1f - poly * g;
        return u < 0 ? -r : r;
    }

    /** y[i] = gelu(x[i]) for i in [lo, hi). */
    public static void forward(float[] x, float[] y, int lo, int hi) {
        row(x, y, lo, hi, FloatVector.broadcast(S, 1f));
    }

    /** One row: the single definition of the forward arithmetic, inlined into both callers' loops. */
    private static void row(float[] x, float[] y, int lo, int hi, FloatVector one) {
        int i = lo;
        for (int end = lo + S.loopBound(hi - lo); i < end; i += S.length()) {
            FloatVector v = FloatVector.fromArray(S, x, i);
            FloatVector u = v.mul(INV_SQRT2);
            FloatVector e = erfVec(u, gauss(u), one);
            v.mul(0.5f).mul(e.add(one)).intoArray(y, i);
        }
        for (; i < hi; i++) y[i] = 0.5f * x[i] * (1f + erf(x[i] * INV_SQRT2));
    }

    /**
     * In place over a block: c[off + r * ld + q] = gelu(c[...]) for r < rows, q < cols, the bits of
     * {@link #forward} on each row (a GEMM epilogue's tile: one call per tile, not per row).
     */
    public static void forwardRows(float[] c, int off, int ld, int rows, int cols) {
        FloatVector one = FloatVector.broadcast(S, 1f);
        for (int r = 0; r < rows; r++) row(c, c, off + r * ld, off + r * ld + cols, one);
    }

    /** gx[i] += g[i] * gelu'(x[i]) for i in [lo, hi); gelu'(x) = Phi(x) + x phi(x). */
    public static void backward(float[] g, float[] x, float[] gx, int lo, int hi) {
        int i = lo;
        FloatVector one = FloatVector.broadcast(S, 1f);
        for (int end = lo + S.loopBound(hi - lo); i < end; i += S.length()) {
            FloatVector v = FloatVector.fromArray(S, x, i);
            // one exp per lane: exp(-u^2) with u = x / sqrt 2 serves erf and the density phi(x) = exp(-x^2 / 2) / sqrt(2 pi);
            // a second exp call in this loop pushed C2 past its inlining node budget, and the call boxed every vector
            FloatVector u = v.mul(INV_SQRT2), ex = gauss(u);
            FloatVector cdf = erfVec(u, ex, one).add(one).mul(0.5f);
            FloatVector pdf = ex.mul(INV_SQRT_2PI);
            FloatVector d = v.fma(pdf, cdf);
            FloatVector.fromArray(S, g, i).fma(d, FloatVector.fromArray(S, gx, i)).intoArray(gx, i);
        }
        for (; i < hi; i++) { // the lanes' operations one for one (see erf)
            float v = x[i], u = v * INV_SQRT2, ex = Softmax.exp(-(u * u));
            float cdf = (erf(u, ex) + 1f) * 0.5f;
            float pdf = ex * INV_SQRT_2PI;
            gx[i] = Math.fma(g[i], Math.fma(v, pdf, cdf), gx[i]);
        }
    }

    /** exp(-u^2) per lane. */
    private static FloatVector gauss(FloatVector u) { return Softmax.exp(u.mul(u).neg()); }

    /** erf(u) per lane given g = exp(-u^2). */
    private static FloatVector erfVec(FloatVector u, FloatVector g, FloatVector one) {
        FloatVector a = u.abs();
        FloatVector t = one.div(a.fma(FloatVector.broadcast(S, P), one));
        FloatVector poly = t.fma(FloatVector.broadcast(S, A5), FloatVector.broadcast(S, A4));
        poly = poly.fma(t, FloatVector.broadcast(S, A3));
        poly = poly.fma(t, FloatVector.broadcast(S, A2));
        poly = poly.fma(t, FloatVector.broadcast(S, A1));
        poly = poly.mul(t);
        FloatVector r = one.sub(poly.mul(g));
        return r.blend(r.neg(), u.compare(VectorOperators.LT, 0f));
    }
}
