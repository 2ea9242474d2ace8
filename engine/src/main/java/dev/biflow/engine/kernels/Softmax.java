// Softmax kernels (Vector API, vector exp): rows, strided columns, in-place masked rows, and their gradients.
package dev.biflow.engine.kernels;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.VectorMask;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorShuffle;
import jdk.incubator.vector.VectorSpecies;

/**
 * Numerically stable softmax and log-softmax on contiguous rows ({@code *Row}) and on the
 * "column" layout (outer, n, inner) with inner > 1 ({@code *Cols}, vectorised across inner).
 *
 * <p>Reproducibility across JIT tiers. Two Vector API operations give different bits in the
 * interpreter (their Java fallback) and in C2-compiled code (their intrinsic), so a kernel built
 * on them changes its results once it warms up, and two runs of the same program differ:
 * <ul>
 *   <li>{@code lanewise(EXP)}: the fallback is Math.exp, the x86 intrinsic (SVML) differs from it
 *   by 1 ulp on about 1% of inputs. We use {@link #exp(FloatVector)}, a Cephes-style polynomial
 *   built from lane-wise add/mul/fma only (each exactly rounded, so identical in every tier),
 *   within 2x of the intrinsic (0.7 vs 0.4-1.0 ns per element on AVX-512, noisy host) and
 *   15x faster than a scalar Math.exp loop; relative error below 1e-7;
 *   <li>{@code reduceLanes(ADD)}: the order of the float additions differs (measured: 1766 of
 *   4480 softmax outputs changed after warm-up). We use {@link Vec#sumLanes}, a fixed butterfly of
 *   lane-wise adds.
 * </ul>
 * Plain sums and dot products are {@link Vec#sum} and {@link Vec#dot} (one implementation, one rounding).
 *
 * <p>Scalar references live in the tests (FusedTest builds softmax from primitive ops).
 */
public final class Softmax {
    private Softmax() {}

    private static final VectorSpecies<Float> S = FloatVector.SPECIES_PREFERRED;
    private static final int L = S.length();

    // ---------------------------------------------------------------- exp

    // exp(x) = 2^n * e^r, n = round(x log2 e), r = x - n ln 2 (ln 2 split in two for exactness),
    // e^r ~ 1 + r + r^2 P(r) on |r| <= ln2/2 (Cephes expf coefficients, ~1 ulp)
    private static final float EXP_LO = -87.3f, EXP_HI = 88.3f;
    private static final float LOG2E = 1.44269504088896341f, LN2_HI = 0.693359375f, LN2_LO = -2.12194440e-4f;
    private static final float P0 = 1.9875691500e-4f, P1 = 1.3981999507e-3f, P2 = 8.3334519073e-3f,
            P3 = 4.1665795894e-2f, P4 = 1.6666665459e-1f, P5 = 5.0000001201e-1f;
    /** 1.5 * 2^23: adding it rounds to an integer, which then sits in the low mantissa bits. */
    private static final float MAGIC = 12582912f;
    private static final int MAGIC_BITS = 0x4B400000;

    /**
     * e^x per lane, the same bits in every JIT tier (see the class comment); relative error about
     * 1e-7. x < -87.3 gives 0 (also -inf), x > 88.3 gives +inf (exp(88.3) is 2.4e38, so this
     * clips the last 0.4 of the float range; softmax only ever passes x <= 0), NaN stays NaN.
     */
    public static FloatVector exp(FloatVector x) {
        // Clamped by compare and blend, not max/min: FloatVector.max/min carry Math.max's NaN and -0.0 rules,
        // which C2 spells as a chain of ~5 instructions each (2.5 ns per op measured, against 0.5 for a
        // blend); the out-of-range lanes are overwritten below anyway, and NaN passes through either way.
        VectorMask<Float> under = x.lt(EXP_LO), over = x.compare(VectorOperators.GT, EXP_HI);
        FloatVector xc = x.blend(EXP_LO, under).blend(EXP_HI, over);
        FloatVector t = xc.fma(LOG2E, MAGIC);
        FloatVector n = t.sub(MAGIC);
        FloatVector r = n.fma(FloatVector.broadcast(S, -LN2_HI), xc);
        r = n.fma(FloatVector.broadcast(S, -LN2_LO), r);
        FloatVector p = r.fma(FloatVector.broadcast(S, P0), FloatVector.broadcast(S, P1));
        p = p.fma(r, FloatVector.broadcast(S, P2));
        p = p.fma(r, FloatVector.broadcast(S, P3));
        p = p.fma(r, FloatVector.broadcast(S, P4));
        p = p.fma(r, FloatVector.broadcast(S, P5));
        FloatVector y = p.fma(r.mul(r), r).add(1f);
        FloatVector scale = t.reinterpretAsInts().sub(MAGIC_BITS - 127).lanewise(VectorOperators.LSHL, 23)
                .reinterpretAsFloats();
        FloatVector e = y.mul(scale);
        return e.blend(0f, under).blend(Float.POSITIVE_INFINITY, over);
    }

    /** The scalar twin of {@link #exp(FloatVector)}: the same operations, so the same bits as a lane. */
    public static float exp(float x) {
        if (x < EXP_LO) return 0f;
        if (x > EXP_HI) return Float.POSITIVE_INFINITY;
        if (x != x) return x;
        float t = Math.fma(x, LOG2E, MAGIC);
        float n = t - MAGIC;
        float r = Math.fma(n, -LN2_HI, x);
        r = Math.fma(n, -LN2_LO, r);
        float p = Math.fma(Math.fma(Math.fma(Math.fma(Math.fma(P0, r, P1), r, P2), r, P3), r, P4), r, P5);
        float y = Math.fma(p, r * r, r) + 1f;
        return y * Float.intBitsToFloat((Float.floatToRawIntBits(t) - (MAGIC_BITS - 127)) << 23);
    }

    // ---------------------------------------------------------------- reductions

    /** y[yOff + i] = exp(x[xOff + i] - shift) for i in [0, n); returns the sum of the y written. */
    public static float expShift(float[] x, int xOff, float[] y, int yOff, int n, float shift) {
        FloatVector vs = FloatVector.broadcast(S, shift);
        FloatVector acc = FloatVector.zero(S);
        int i = 0;
        for (int end = S.loopBound(n); i < end; i += L) {
            FloatVector e = exp(FloatVector.fromArray(S, x, xOff + i).sub(vs));
            e.intoArray(y, yOff + i);
            acc = acc.add(e);
        }
        float s = Vec.sumLanes(acc);
        for (; i < n; i++) {
            float e = exp(x[xOff + i] - shift);
            y[yOff + i] = e;
            s += e;
        }
        return s;
    }

    /** Sum of exp(x[off + i] - shift) for i in [0, n), nothing written. */
    public static float sumExpShift(float[] x, int off, int n, float shift) {
        FloatVector vs = FloatVector.broadcast(S, shift);
        FloatVector acc = FloatVector.zero(S);
        int i = 0;
        for (int end = S.loopBound(n); i < end; i += L)
            acc = acc.add(exp(FloatVector.fromArray(S, x, off + i).sub(vs)));
        float s = Vec.sumLanes(acc);
        for (; i < n; i++) s += exp(x[off + i] - shift);
        return s;
    }

    /** y[off + i] *= s for i in [0, n). */
    public static void scaleInPlace(float[] y, int off, int n, float s) {
        int i = 0;
        for (int end = S.loopBound(n); i < end; i += L)
            FloatVector.fromArray(S, y, off + i).mul(s).intoArray(y, off + i);
        for (; i < n; i++) y[off + i] *= s;
    }

    /** log(sum(exp(x[off .. off+n)))), max-shifted; n >= 1. */
    public static float logSumExp(float[] x, int off, int n) {
        float m = Vec.max(x, off, n);
        if (m == Float.NEGATIVE_INFINITY || m == Float.POSITIVE_INFINITY || Float.isNaN(m)) return m;
        return m + (float) Math.log(sumExpShift(x, off, n, m));
    }

    /** y row = softmax(x row) over n >= 1 elements (x and y may be the same array and offset). */
    public static void softmaxRow(float[] x, int xOff, float[] y, int yOff, int n) {
        float m = Vec.max(x, xOff, n);
        float s = expShift(x, xOff, y, yOff, n, m);
        scaleInPlace(y, yOff, n, 1f / s);
    }

    /** y row = log_softmax(x row) = x - logsumexp(x), n >= 1. */
    public static void logSoftmaxRow(float[] x, int xOff, float[] y, int yOff, int n) {
        float lse = logSumExp(x, xOff, n);
        FloatVector vl = FloatVector.broadcast(S, lse);
        int i = 0;
        for (int end = S.loopBound(n); i < end; i += L)
            FloatVector.fromArray(S, x, xOff + i).sub(vl).intoArray(y, yOff + i);
        for (; i < n; i++) y[yOff + i] = x[xOff + i] - lse;
    }

    /**
     * In-place softmax of s[off .. off+limit) for attention rows: entries in [limit, n) are set to
     * 0, and so is the whole row when limit <= 0 or every entry in range is -inf (a query that may
     * attend to no key gets a zero row, not NaN).
     */
    public static void softmaxRowInPlace(float[] s, int off, int n, int limit) {
        int lim = Math.min(limit, n);
        if (lim <= 0) {
            java.util.Arrays.fill(s, off, off + n, 0f);
            return;
        }
        float m = Vec.max(s, off, lim);
        if (m == Float.NEGATIVE_INFINITY) {
            java.util.Arrays.fill(s, off, off + n, 0f);
            return;
        }
        float sum = expShift(s, off, s, off, lim, m);
        scaleInPlace(s, off, lim, 1f / sum);
        if (lim < n) java.util.Arrays.fill(s, off + lim, off + n, 0f);
    }

    /** gx += y * (g - dot(g, y)) over one row (the softmax vector-Jacobian product). */
    public static void softmaxBackwardRow(float[] y, int yOff, float[] g, int gOff, float[] gx, int gxOff, int n) {
        float d = Vec.dot(g, gOff, y, yOff, n);
        FloatVector vd = FloatVector.broadcast(S, d);
        int i = 0;
        for (int end = S.loopBound(n); i < end; i += L) {
            FloatVector vy = FloatVector.fromArray(S, y, yOff + i);
            FloatVector t = FloatVector.fromArray(S, g, gOff + i).sub(vd);
            vy.fma(t, FloatVector.fromArray(S, gx, gxOff + i)).intoArray(gx, gxOff + i);
        }
        for (; i < n; i++) gx[gxOff + i] += y[yOff + i] * (g[gOff + i] - d);
    }

    /** In place: row = y * (row - dot(row, y)), turning dL/dP into dL/dS for a softmax row. */
    public static void softmaxBackwardRowInPlace(float[] y, int yOff, float[] gs, int gOff, int n) {
        float d = Vec.dot(gs, gOff, y, yOff, n);
        FloatVector vd = FloatVector.broadcast(S, d);
        int i = 0;
        for (int end = S.loopBound(n); i < end; i += L) {
            FloatVector vy = FloatVector.fromArray(S, y, yOff + i);
            FloatVector.fromArray(S, gs, gOff + i).sub(vd).mul(vy).intoArray(gs, gOff + i);
        }
        for (; i < n; i++) gs[gOff + i] = y[yOff + i] * (gs[gOff + i] - d);
    }

    /** gx += g - exp(y) * sum(g) over one row, y = log_softmax(x). */
    public static void logSoftmaxBackwardRow(float[] y, int yOff, float[] g, int gOff, float[] gx, int gxOff, int n) {
        float sg = Vec.sum(g, gOff, n);
        FloatVector vs = FloatVector.broadcast(S, -sg);
        int i = 0;
        for (int end = S.loopBound(n); i < end; i += L) {
            FloatVector e = exp(FloatVector.fromArray(S, y, yOff + i));
            FloatVector acc = FloatVector.fromArray(S, gx, gxOff + i).add(FloatVector.fromArray(S, g, gOff + i));
            e.fma(vs, acc).intoArray(gx, gxOff + i);
        }
        for (; i < n; i++) gx[gxOff + i] += g[gOff + i] - exp(y[yOff + i]) * sg;
    }

    // ------------------------------------------------------------ column layout (outer, n, inner), inner > 1

    /** Elementwise exp of a[off .. off+n) in place. */
    public static void expInPlace(float[] a, int off, int n) {
        int i = 0;
        for (int end = S.loopBound(n); i < end; i += L)
            exp(FloatVector.fromArray(S, a, off + i)).intoArray(a, off + i);
        for (; i < n; i++) a[off + i] = exp(a[off + i]);
    }

    /**
     * Softmax over the middle axis of one (n, inner) block starting at base: for each column i,
     * y[base + j*inner + i] = softmax_j(x[base + j*inner + i]). m and s are scratch of length inner.
     * With log=true writes log_softmax instead.
     */
    public static void softmaxCols(float[] x, float[] y, int base, int n, int inner, float[] m, float[] s, boolean log) {
        System.arraycopy(x, base, m, 0, inner);
        for (int j = 1; j < n; j++) {
            int o = base + j * inner;
            for (int i = 0; i < inner; i++) m[i] = Math.max(m[i], x[o + i]);
        }
        java.util.Arrays.fill(s, 0, inner, 0f);
        for (int j = 0; j < n; j++) {
            int o = base + j * inner;
            for (int i = 0; i < inner; i++) y[o + i] = x[o + i] - m[i];
            if (log) continue; // y keeps x - m; the sums come in a second pass, once m is free as scratch
            expInPlace(y, o, inner);
            for (int i = 0; i < inner; i++) s[i] += y[o + i];
        }
        if (log) {
            // s = sum_j exp(x - m), from the shifted values, with m reused as scratch
            for (int j = 0; j < n; j++) {
                int o = base + j * inner;
                System.arraycopy(y, o, m, 0, inner);
                expInPlace(m, 0, inner);
                for (int i = 0; i < inner; i++) s[i] += m[i];
            }
            for (int i = 0; i < inner; i++) s[i] = (float) Math.log(s[i]);
            for (int j = 0; j < n; j++) {
                int o = base + j * inner;
                for (int i = 0; i < inner; i++) y[o + i] -= s[i];
            }
        } else {
            for (int i = 0; i < inner; i++) s[i] = 1f / s[i];
            for (int j = 0; j < n; j++) {
                int o = base + j * inner;
                for (int i = 0; i < inner; i++) y[o + i] *= s[i];
            }
        }
    }

    /**
     * Backward of {@link #softmaxCols} over one block: softmax gx += y (g - sum_j g y);
     * log-softmax gx += g - exp(y) sum_j g. d is scratch of length inner.
     */
    public static void softmaxColsBackward(float[] y, float[] g, float[] gx, int base, int n, int inner, float[] d, boolean log) {
        java.util.Arrays.fill(d, 0, inner, 0f);
        for (int j = 0; j < n; j++) {
            int o = base + j * inner;
            if (log) for (int i = 0; i < inner; i++) d[i] += g[o + i];
            else for (int i = 0; i < inner; i++) d[i] += g[o + i] * y[o + i];
        }
        for (int j = 0; j < n; j++) {
            int o = base + j * inner;
            if (log) for (int i = 0; i < inner; i++) gx[o + i] += g[o + i] - exp(y[o + i]) * d[i];
            else for (int i = 0; i < inner; i++) gx[o + i] += y[o + i] * (g[o + i] - d[i]);
        }
    }
}
