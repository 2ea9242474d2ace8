// Gemm against the double-precision reference: random shapes, block edges, threads, BLAS corner cases.
package dev.biflow.engine.kernels;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;
import static org.quicktheories.QuickTheory.qt;
import static org.quicktheories.generators.SourceDSL.arbitrary;
import static org.quicktheories.generators.SourceDSL.booleans;
import static org.quicktheories.generators.SourceDSL.integers;
import static org.quicktheories.generators.SourceDSL.longs;

import java.util.Arrays;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;
import org.quicktheories.core.Gen;

class GemmTest {
    record Dims(int m, int n, int k) {}

    /** mr: micro-kernel tile height (4 or 12); allowSmall: whether tiny sizes may skip packing. */
    record Mode(boolean transA, boolean transB, int mr, boolean allowSmall) {}

    record Scalars(float alpha, float beta) {}

    /** Offsets of A, B, C in their arrays and the padding of each leading dimension past the minimum. */
    record Layout(int aOff, int bOff, int cOff, int padA, int padB, int padC, long seed) {}

    /** One problem with its arrays laid out as a Layout says; c0 is C before the call. */
    record Problem(Dims d, Mode mo, Scalars s, Layout l, float[] a, int lda, float[] b, int ldb, float[] c, int ldc, float[] c0) {
        static Problem of(Dims d, Mode mo, Scalars s, Layout l) {
            SplittableRandom r = new SplittableRandom(l.seed());
            int aCols = mo.transA() ? d.m() : d.k(), aRows = mo.transA() ? d.k() : d.m();
            int bCols = mo.transB() ? d.k() : d.n(), bRows = mo.transB() ? d.n() : d.k();
            int lda = aCols + l.padA(), ldb = bCols + l.padB(), ldc = d.n() + l.padC();
            // Three floats of slack past the end: a kernel must not touch them either.
            float[] a = random(r, l.aOff() + aRows * lda + 3);
            float[] b = random(r, l.bOff() + bRows * ldb + 3);
            float[] c = random(r, l.cOff() + d.m() * ldc + 3);
            return new Problem(d, mo, s, l, a, lda, b, ldb, c, ldc, c.clone());
        }

        void run() {
            Gemm.gemmWith(mo.mr(), mo.allowSmall(), mo.transA(), mo.transB(), d.m(), d.n(), d.k(), s.alpha(),
                    a, l.aOff(), lda, b, l.bOff(), ldb, s.beta(), c, l.cOff(), ldc, GemmEpilogue.NONE);
        }

        /** Checks C against the reference inside the m x n window and bit-for-bit unchanged outside it. */
        void check() {
            int m = d.m(), n = d.n(), k = d.k();
            GemmReference.Result ref = GemmReference.gemm(mo.transA(), mo.transB(), m, n, k, s.alpha(),
                    a, l.aOff(), lda, b, l.bOff(), ldb, s.beta(), c0, l.cOff(), ldc);
            double[] want = ref.value(), mag = ref.magnitude();
            double tol = GemmReference.gamma(k + 2);
            boolean[] inside = new boolean[c.length];
            for (int i = 0; i < m; i++)
                for (int j = 0; j < n; j++) {
                    int ci = l.cOff() + i * ldc + j;
                    inside[ci] = true;
                    double err = Math.abs(c[ci] - want[i * n + j]);
                    if (!(err <= tol * mag[i * n + j]))
                        fail(this + ": C[" + i + "," + j + "] = " + c[ci] + ", reference " + want[i * n + j]
                             + ", error " + err + " > gamma(k+2) * " + mag[i * n + j]);
                }
            for (int x = 0; x < c.length; x++)
                if (!inside[x] && Float.floatToRawIntBits(c[x]) != Float.floatToRawIntBits(c0[x]))
                    fail(this + ": wrote outside C at array index " + x);
        }

        @Override public String toString() { return d + " " + mo + " " + s + " " + l; }
    }

    static float[] random(SplittableRandom r, int len) {
        float[] x = new float[len];
        for (int i = 0; i < len; i++) x[i] = (float) (r.nextDouble() * 2 - 1);
        return x;
    }

    /** Runs body with the kernel pool at the given size, restoring the previous size afterwards. */
    static void withThreads(int t, Runnable body) {
        int before = Parallel.threads();
        Parallel.setThreads(t);
        try {
            body.run();
        } finally {
            Parallel.setThreads(before);
        }
    }

    /*
     * Sizes 1..70 cross every tail: tile rows (4, 12), tile columns (2L = 16 or 32 lanes) and
     * the small-path cut-off; offsets and padded leading dimensions catch index slips. The bound
     * gamma(k+2) * sum|terms| is Higham's worst case for k products summed in any order plus
     * the alpha and beta roundings, so it holds for every blocking and thread split.
     */
    @Test
    void matchesReferenceOnRandomShapes() {
        Gen<Dims> wide = integers().between(1, 70).zip(integers().between(1, 70), integers().between(1, 70), Dims::new);
        Gen<Dims> tiny = integers().between(1, 12).zip(integers().between(1, 12), integers().between(1, 12), Dims::new);
        Gen<Dims> dims = wide.mix(tiny, 25); // a quarter tiny: the unpacked path when allowed
        Gen<Mode> modes = booleans().all().zip(booleans().all(), arbitrary().pick(4, 12), booleans().all(), Mode::new);
        Gen<Scalars> scalars = arbitrary().pick(1f, -0.5f, 2.25f, 0.3f)
                .zip(arbitrary().pick(0f, 1f, -1.5f, 0.7f), Scalars::new);
        Gen<int[]> offsets = integers().between(0, 7)
                .zip(integers().between(0, 7), integers().between(0, 7), (x, y, z) -> new int[] {x, y, z});
        Gen<int[]> pads = integers().between(0, 5)
                .zip(integers().between(0, 5), integers().between(0, 5), (x, y, z) -> new int[] {x, y, z});
        Gen<Layout> layouts = offsets.zip(pads, longs().all(),
                (o, p, seed) -> new Layout(o[0], o[1], o[2], p[0], p[1], p[2], seed));
        qt().withExamples(300).forAll(dims, modes, scalars, layouts).checkAssert((d, mo, s, l) -> {
            Problem p = Problem.of(d, mo, s, l);
            p.run();
            p.check();
        });
    }

    /**
     * The bias as the GEMM's start value, formed tile by tile inside the packed path, gives exactly the
     * bits of a separate start-value pass followed by beta = 1: across tile edges, KC (k up to 300), both
     * micro-kernels, the small path, 1 and 2 threads, and with NaN in C when beta = 0 (C must not be read).
     */
    @Test
    void biasStartValueIsBitIdenticalToAPrefillPass() {
        Gen<Dims> dims = integers().between(1, 80).zip(integers().between(1, 80), integers().between(1, 300), Dims::new);
        Gen<Mode> modes = booleans().all().zip(booleans().all(), arbitrary().pick(4, 12), booleans().all(), Mode::new);
        qt().withExamples(120).forAll(dims, modes, arbitrary().pick(0f, 1f, -1.5f), longs().all()).checkAssert((d, mo, beta, seed) -> {
            SplittableRandom r = new SplittableRandom(seed);
            int m = d.m(), n = d.n(), k = d.k(), biasOff = r.nextInt(4);
            float[] a = random(r, m * k), b = random(r, k * n), bias = random(r, biasOff + n + 2);
            float[] c0 = random(r, m * n);
            if (beta == 0f) Arrays.fill(c0, Float.NaN);
            int lda = mo.transA() ? m : k, ldb = mo.transB() ? k : n;
            float[] fused = c0.clone(), twoPass = c0.clone();
            withThreads(1 + r.nextInt(2), () -> {
                Gemm.gemmWith(mo.mr(), mo.allowSmall(), mo.transA(), mo.transB(), m, n, k, 0.75f, a, 0, lda, b, 0, ldb,
                        beta, fused, 0, n, GemmEpilogue.bias(bias, biasOff));
                Gemm.prefillBias(m, n, beta, twoPass, 0, n, bias, biasOff);
                Gemm.gemmWith(mo.mr(), mo.allowSmall(), mo.transA(), mo.transB(), m, n, k, 0.75f, a, 0, lda, b, 0, ldb,
                        1f, twoPass, 0, n, GemmEpilogue.NONE);
            });
            for (int i = 0; i < fused.length; i++)
                if (Float.floatToRawIntBits(fused[i]) != Float.floatToRawIntBits(twoPass[i]))
                    fail(d + " " + mo + " beta " + beta + ": C[" + i + "] = " + fused[i] + " fused, " + twoPass[i] + " two-pass");
        });
        assertThrows(IllegalArgumentException.class, () -> Gemm.gemm(false, false, 2, 3, 1, 1f, new float[2], 0, 1,
                new float[3], 0, 3, 0f, new float[6], 0, 3, GemmEpilogue.bias(new float[2], 0)), "bias shorter than n");
    }

    /**
     * GELU applied to each C tile after its last K panel (inference's Linear + GELU) gives the bits of the
     * GEMM followed by a GELU pass over C: tile edges, KC, both kernels, the small path, with and without a
     * bias, beta 0 (with NaN in C) and 1, 1 and 2 threads.
     */
    @Test
    void geluEpilogueIsBitIdenticalToAGeluPass() {
        Gen<Dims> dims = integers().between(1, 80).zip(integers().between(1, 80), integers().between(1, 300), Dims::new);
        Gen<Mode> modes = booleans().all().zip(booleans().all(), arbitrary().pick(4, 12), booleans().all(), Mode::new);
        qt().withExamples(100).forAll(dims, modes, arbitrary().pick(0f, 1f), longs().all()).checkAssert((d, mo, beta, seed) -> {
            SplittableRandom r = new SplittableRandom(seed);
            int m = d.m(), n = d.n(), k = d.k();
            float[] a = random(r, m * k), b = random(r, k * n), bias = r.nextBoolean() ? random(r, n) : null;
            float[] c0 = random(r, m * n);
            if (beta == 0f) Arrays.fill(c0, Float.NaN);
            int lda = mo.transA() ? m : k, ldb = mo.transB() ? k : n;
            float[] fused = c0.clone(), twoPass = c0.clone();
            withThreads(1 + r.nextInt(2), () -> {
                Gemm.gemmWith(mo.mr(), mo.allowSmall(), mo.transA(), mo.transB(), m, n, k, 1f, a, 0, lda, b, 0, ldb,
                        beta, fused, 0, n, GemmEpilogue.biasGelu(bias));
                Gemm.gemmWith(mo.mr(), mo.allowSmall(), mo.transA(), mo.transB(), m, n, k, 1f, a, 0, lda, b, 0, ldb,
                        beta, twoPass, 0, n, GemmEpilogue.bias(bias));
                Gelu.forward(twoPass, twoPass, 0, twoPass.length);
            });
            for (int i = 0; i < fused.length; i++)
                if (Float.floatToRawIntBits(fused[i]) != Float.floatToRawIntBits(twoPass[i]))
                    fail(d + " " + mo + " beta " + beta + (bias == null ? ", no bias" : "") + ": C[" + i + "] = " + fused[i] + " fused, " + twoPass[i] + " two-pass");
        });
    }

    /**
     * The residual added to each C tile after its last K panel (inference's x + proj(h)) gives the bits of the
     * GEMM with beta 0 followed by r + c over C: tile edges, KC, both kernels, the small path, with and without
     * a bias, with and without a gate per group of rows, NaN in C beforehand (never read), R with a row stride
     * wider than C's, 1 and 2 threads.
     */
    @Test
    void residualEpilogueIsBitIdenticalToAnAddPass() {
        Gen<Dims> dims = integers().between(1, 80).zip(integers().between(1, 80), integers().between(1, 300), Dims::new);
        Gen<Mode> modes = booleans().all().zip(booleans().all(), arbitrary().pick(4, 12), booleans().all(), Mode::new);
        qt().withExamples(100).forAll(dims, modes, longs().all()).checkAssert((d, mo, seed) -> {
            SplittableRandom r = new SplittableRandom(seed);
            int m = d.m(), n = d.n(), k = d.k(), ldr = n + r.nextInt(3), rOff = r.nextInt(5);
            float[] a = random(r, m * k), b = random(r, k * n), bias = r.nextBoolean() ? random(r, n) : null;
            float[] res = random(r, rOff + m * ldr);
            // a gate for groups of gRows rows (adaLN-Zero: one row per example), or none
            int gRows = r.nextBoolean() ? 0 : pickDivisor(r, m), gOff = r.nextInt(3);
            float[] gate = gRows == 0 ? null : random(r, gOff + m / gRows * n);
            int lda = mo.transA() ? m : k, ldb = mo.transB() ? k : n;
            float[] fused = new float[m * n], twoPass = new float[m * n];
            Arrays.fill(fused, Float.NaN);
            withThreads(1 + r.nextInt(2), () -> {
                Gemm.gemmWith(mo.mr(), mo.allowSmall(), mo.transA(), mo.transB(), m, n, k, 1f, a, 0, lda, b, 0, ldb,
                        0f, fused, 0, n, GemmEpilogue.biasGatedAdd(bias, 0, res, rOff, ldr, gate, gOff, n, Math.max(1, gRows)));
                Gemm.gemmWith(mo.mr(), mo.allowSmall(), mo.transA(), mo.transB(), m, n, k, 1f, a, 0, lda, b, 0, ldb,
                        0f, twoPass, 0, n, GemmEpilogue.bias(bias));
            });
            for (int i = 0; i < m; i++)
                for (int j = 0; j < n; j++) {
                    float y = gate == null ? twoPass[i * n + j] : gate[gOff + (i / gRows) * n + j] * twoPass[i * n + j];
                    twoPass[i * n + j] = res[rOff + i * ldr + j] + y;
                }
            for (int i = 0; i < fused.length; i++)
                if (Float.floatToRawIntBits(fused[i]) != Float.floatToRawIntBits(twoPass[i]))
                    fail(d + " " + mo + (bias == null ? ", no bias" : "") + ": C[" + i + "] = " + fused[i] + " fused, " + twoPass[i] + " two-pass");
        });
        // tall and wide enough for 2 threads to take whole column blocks (the epilogue's offsets shift with the block)
        SplittableRandom r = new SplittableRandom(5);
        int m = 1216, n = 600, k = 64, gRows = 8;
        float[] a = random(r, m * k), b = random(r, n * k), bias = random(r, n), res = random(r, m * (n + 3)), gate = random(r, m / gRows * n);
        float[] fused = new float[m * n], twoPass = new float[m * n];
        withThreads(2, () -> {
            Gemm.gemm(false, true, m, n, k, 1f, a, 0, k, b, 0, k, 0f, fused, 0, n, GemmEpilogue.biasGatedAdd(bias, 0, res, 0, n + 3, gate, 0, n, gRows));
            Gemm.gemm(false, true, m, n, k, 1f, a, 0, k, b, 0, k, 0f, twoPass, 0, n, GemmEpilogue.bias(bias));
        });
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++) {
                float want = res[i * (n + 3) + j] + gate[(i / gRows) * n + j] * twoPass[i * n + j];
                assertEquals(Float.floatToRawIntBits(want), Float.floatToRawIntBits(fused[i * n + j]), "wide gated residual C[" + i + ", " + j + "]");
            }
        float[] c = new float[4];
        assertThrowsNaming("must not overlap the output", () -> Gemm.gemm(false, false, 2, 2, 2, 1f, new float[4], 0, 2,
                new float[4], 0, 2, 0f, c, 0, 2, GemmEpilogue.biasAdd(null, c, 0, 2)));
        float[] one = {1, 2, 3, 4, 0, 0, 0, 0}; // residual and output in one array (an inference plan's arena), apart: allowed
        Gemm.gemm(false, false, 2, 2, 2, 1f, new float[]{1, 0, 0, 1}, 0, 2, new float[]{1, 1, 1, 1}, 0, 2, 0f, one, 4, 2, GemmEpilogue.biasAdd(null, one, 0, 2));
        assertArrayEquals(new float[]{1, 2, 3, 4, 2, 3, 4, 5}, one);
        assertThrowsNaming("r is too short", () -> Gemm.gemm(false, false, 2, 2, 2, 1f, new float[4], 0, 2,
                new float[4], 0, 2, 0f, c, 0, 2, GemmEpilogue.biasAdd(null, new float[3], 0, 2)));
        assertThrowsNaming("3 rows are not whole groups of gRows = 2", () -> Gemm.gemm(false, false, 3, 2, 2, 1f, new float[6], 0, 2,
                new float[4], 0, 2, 0f, new float[6], 0, 2, GemmEpilogue.biasGatedAdd(null, 0, new float[6], 0, 2, new float[2], 0, 2, 2)));
    }

    /**
     * An epilogue as passes around a plain GEMM (GemmEpilogue.startValue, the GEMM with the beta it returns,
     * GemmEpilogue.finish: what a backend that cannot fuse it runs) gives the bits of Gemm.gemm with it fused:
     * every kind, with and without a bias, alpha and beta other than 1 and 0.
     */
    @Test
    void epilogueAsPassesIsBitIdenticalToTheFusedGemm() {
        Gen<Dims> dims = integers().between(1, 60).zip(integers().between(1, 60), integers().between(1, 300), Dims::new);
        qt().withExamples(80).forAll(dims, integers().between(0, 3), arbitrary().pick(0f, 1f, -0.5f), longs().all()).checkAssert((d, kind, beta, seed) -> {
            SplittableRandom r = new SplittableRandom(seed);
            int m = d.m(), n = d.n(), k = d.k(), gRows = pickDivisor(r, m);
            float[] a = random(r, m * k), b = random(r, k * n), bias = r.nextBoolean() ? random(r, n + 1) : null;
            float[] res = random(r, m * n), gate = r.nextBoolean() ? random(r, m / gRows * n) : null;
            GemmEpilogue epi = switch (kind) {
                case 0 -> GemmEpilogue.bias(bias, bias == null ? 0 : 1);
                case 1 -> GemmEpilogue.biasGelu(bias);
                case 2 -> GemmEpilogue.biasAdd(bias, res, 0, n);
                default -> GemmEpilogue.biasGatedAdd(bias, 0, res, 0, n, gate, 0, n, gRows);
            };
            float[] fused = random(r, m * n), passes = fused.clone();
            Gemm.gemm(false, true, m, n, k, 0.75f, a, 0, k, b, 0, k, beta, fused, 0, n, epi);
            float bt = epi.startValue(m, n, beta, passes, 0, n);
            Gemm.gemm(false, true, m, n, k, 0.75f, a, 0, k, b, 0, k, bt, passes, 0, n, GemmEpilogue.NONE);
            epi.finish(m, n, passes, 0, n);
            for (int i = 0; i < fused.length; i++)
                if (Float.floatToRawIntBits(fused[i]) != Float.floatToRawIntBits(passes[i]))
                    fail(d + " " + epi.getClass().getSimpleName() + " beta " + beta + ": C[" + i + "] = " + fused[i] + " fused, " + passes[i] + " as passes");
        });
        assertTrue(GemmEpilogue.bias(null) == GemmEpilogue.NONE, "no bias is no epilogue");
        assertThrowsNaming("GemmEpilogue.NONE", () -> Gemm.gemm(false, false, 1, 1, 1, 1f, new float[1], 0, 1, new float[1], 0, 1, 0f,
                new float[1], 0, 1, null));
        assertThrowsNaming("GemmEpilogue.NONE", () -> new GemmEpilogue.Bias(null, 0));
        assertThrowsNaming("gRows must be >= 1", () -> GemmEpilogue.biasGatedAdd(null, 0, new float[4], 0, 2, new float[2], 0, 2, 0));
    }

    /** A random divisor of m (>= 1). */
    static int pickDivisor(SplittableRandom r, int m) {
        int d;
        do d = 1 + r.nextInt(m); while (m % d != 0);
        return d;
    }

    /**
     * Crosses KC (256) and both tile edges, on 1 and 2 threads; the bits must not depend on the
     * thread count. Each transpose combination runs one of the two micro-kernels.
     */
    @Test
    void largeAcrossBlockBoundaries() {
        for (int t = 0; t < 4; t++) {
            boolean ta = (t & 1) != 0, tb = (t & 2) != 0;
            int mr = (t == 0 || t == 3) ? 12 : 4;
            Problem one = Problem.of(new Dims(300, 257, 513), new Mode(ta, tb, mr, true), new Scalars(1.25f, -0.5f),
                    new Layout(3, 1, 2, 3, 0, 5, 42 + t));
            Problem two = new Problem(one.d(), one.mo(), one.s(), one.l(), one.a(), one.lda(), one.b(), one.ldb(),
                    one.c0().clone(), one.ldc(), one.c0());
            withThreads(1, one::run);
            withThreads(2, two::run);
            one.check();
            assertArrayEquals(one.c(), two.c(), "1 and 2 threads must give the same bits for " + one);
        }
    }

    /**
     * Few rows, many columns: with the 12-row tile the threads split N instead of M (two row
     * slivers are too few to share); NC (1024) is crossed.
     */
    @Test
    void wideShortSplitsColumns() {
        for (boolean tb : new boolean[] {false, true}) {
            Problem one = Problem.of(new Dims(20, 1100, 300), new Mode(false, tb, Gemm.MR, true), new Scalars(1f, 1f),
                    new Layout(0, 0, 0, 0, 0, 0, 7));
            Problem two = new Problem(one.d(), one.mo(), one.s(), one.l(), one.a(), one.lda(), one.b(), one.ldb(),
                    one.c0().clone(), one.ldc(), one.c0());
            withThreads(1, one::run);
            withThreads(2, two::run);
            one.check();
            assertArrayEquals(one.c(), two.c(), "1 and 2 threads must give the same bits for " + one);
        }
    }

    /** The shapes the transformer calls, through the public entry point. */
    @Test
    void transformerShapesThroughPublicEntry() {
        int[][] shapes = {{196, 196, 32}, {196, 32, 196}, {200, 512, 128}, {49, 64, 64}, {4, 4, 4}};
        for (int[] sh : shapes)
            for (boolean tb : new boolean[] {false, true}) {
                Problem p = Problem.of(new Dims(sh[0], sh[1], sh[2]), new Mode(false, tb, Gemm.MR, true),
                        new Scalars(1f, 0f), new Layout(0, 0, 0, 0, 0, 0, sh[0] * 31L + sh[2]));
                Gemm.gemm(false, tb, sh[0], sh[1], sh[2], 1f, p.a(), 0, p.lda(), p.b(), 0, p.ldb(), 0f, p.c(), 0, p.ldc(), GemmEpilogue.NONE);
                p.check();
            }
    }

    /** beta == 0 means "overwrite": NaN already in C must not survive, on every path. */
    @Test
    void betaZeroOverwritesNaN() {
        int[][] shapes = {{3, 5, 2}, {13, 40, 33}, {70, 70, 70}};
        for (int[] sh : shapes)
            for (int mr : new int[] {4, 12})
                for (boolean small : new boolean[] {false, true}) {
                    Problem p = Problem.of(new Dims(sh[0], sh[1], sh[2]), new Mode(false, false, mr, small),
                            new Scalars(1.5f, 0f), new Layout(0, 0, 0, 0, 0, 0, 5));
                    Arrays.fill(p.c(), Float.NaN);
                    Arrays.fill(p.c0(), Float.NaN);
                    p.run();
                    p.check();
                }
        // alpha == 0 and k == 0 only scale C: with beta == 0 that is zeros, not NaN * 0.
        float[] c = {Float.NaN, Float.NaN, Float.NaN, Float.NaN};
        Gemm.gemm(false, false, 2, 2, 3, 0f, new float[6], 0, 3, new float[6], 0, 2, 0f, c, 0, 2, GemmEpilogue.NONE);
        assertArrayEquals(new float[4], c);
        Arrays.fill(c, Float.NaN);
        Gemm.gemm(false, false, 2, 2, 0, 1f, new float[0], 0, 1, new float[0], 0, 2, 0f, c, 0, 2, GemmEpilogue.NONE);
        assertArrayEquals(new float[4], c);
    }

    /** alpha == 0 never reads A or B (BLAS): NaN there does not reach C. */
    @Test
    void alphaZeroOnlyScalesC() {
        float[] a = new float[12], b = new float[12];
        Arrays.fill(a, Float.NaN);
        Arrays.fill(b, Float.NaN);
        float[] c = {1, 2, 3, 4, 5, 6, 7, 8, 9};
        Gemm.gemm(true, true, 3, 3, 4, 0f, a, 0, 3, b, 0, 4, 2f, c, 0, 3, GemmEpilogue.NONE);
        assertArrayEquals(new float[] {2, 4, 6, 8, 10, 12, 14, 16, 18}, c);
    }

    @Test
    void emptyProductsAreFine() {
        float[] c = {1, 2, 3, 4};
        Gemm.gemm(false, false, 0, 2, 3, 1f, new float[0], 0, 3, new float[6], 0, 2, 0f, new float[0], 0, 2, GemmEpilogue.NONE);
        Gemm.gemm(false, false, 2, 0, 3, 1f, new float[6], 0, 3, new float[0], 0, 1, 0f, new float[0], 0, 1, GemmEpilogue.NONE);
        Gemm.gemm(false, false, 2, 2, 0, 1f, new float[0], 0, 1, new float[0], 0, 2, 1f, c, 0, 2, GemmEpilogue.NONE);
        assertArrayEquals(new float[] {1, 2, 3, 4}, c, "k == 0, beta == 1 leaves C alone");
        Gemm.gemm(false, false, 2, 2, 0, 1f, new float[0], 0, 1, new float[0], 0, 2, 0.5f, c, 0, 2, GemmEpilogue.NONE);
        assertArrayEquals(new float[] {0.5f, 1, 1.5f, 2}, c, "k == 0 scales C by beta");
        // With k == 0, A's rows are empty: lda == 0 is a valid stride for them.
        Gemm.gemm(false, false, 2, 2, 0, 1f, new float[0], 0, 0, new float[0], 0, 2, 2f, c, 0, 2, GemmEpilogue.NONE);
        assertArrayEquals(new float[] {1, 2, 3, 4}, c);
    }

    @Test
    void oneByOne() {
        float[] c = {10f};
        Gemm.gemm(false, false, 1, 1, 1, 2f, new float[] {3f}, 0, 1, new float[] {4f}, 0, 1, 0.5f, c, 0, 1, GemmEpilogue.NONE);
        assertEquals(29f, c[0]);
    }

    @Test
    void invalidArgumentsAreNamed() {
        float[] x16 = new float[16];
        assertThrowsNaming("m=-1", () -> Gemm.gemm(false, false, -1, 4, 4, 1f, x16, 0, 4, x16, 0, 4, 0f, x16, 0, 4, GemmEpilogue.NONE));
        assertThrowsNaming("k=-2", () -> Gemm.gemm(false, false, 4, 4, -2, 1f, x16, 0, 4, x16, 0, 4, 0f, x16, 0, 4, GemmEpilogue.NONE));
        assertThrowsNaming("a is too short",
                () -> Gemm.gemm(false, false, 4, 4, 4, 1f, new float[15], 0, 4, x16, 0, 4, 0f, x16, 0, 4, GemmEpilogue.NONE));
        assertThrowsNaming("b is too short",
                () -> Gemm.gemm(false, false, 4, 4, 4, 1f, x16, 0, 4, x16, 1, 4, 0f, x16, 0, 4, GemmEpilogue.NONE));
        assertThrowsNaming("c is too short",
                () -> Gemm.gemm(false, false, 4, 4, 4, 1f, x16, 0, 4, x16, 0, 4, 0f, x16, 0, 5, GemmEpilogue.NONE));
        assertThrowsNaming("lda", () -> Gemm.gemm(false, false, 4, 4, 4, 1f, x16, 0, 3, x16, 0, 4, 0f, x16, 0, 4, GemmEpilogue.NONE));
        // Transposed A is stored k x m, so its rows are m long.
        assertThrowsNaming("lda", () -> Gemm.gemm(true, false, 5, 2, 3, 1f, x16, 0, 4, x16, 0, 2, 0f, x16, 0, 2, GemmEpilogue.NONE));
        assertThrowsNaming("ldb", () -> Gemm.gemm(false, true, 2, 2, 3, 1f, x16, 0, 3, x16, 0, 2, 0f, x16, 0, 2, GemmEpilogue.NONE));
        assertThrowsNaming("ldc", () -> Gemm.gemm(false, false, 2, 3, 2, 1f, x16, 0, 2, x16, 0, 3, 0f, x16, 0, 2, GemmEpilogue.NONE));
        assertThrowsNaming("offset", () -> Gemm.gemm(false, false, 2, 2, 2, 1f, x16, -1, 2, x16, 0, 2, 0f, x16, 0, 2, GemmEpilogue.NONE));
        assertThrowsNaming("c is null", () -> Gemm.gemm(false, false, 2, 2, 2, 1f, x16, 0, 2, x16, 0, 2, 0f, null, 0, 2, GemmEpilogue.NONE));
    }

    static void assertThrowsNaming(String fragment, Runnable call) {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, call::run);
        assertTrue(e.getMessage().contains(fragment), "message '" + e.getMessage() + "' should name '" + fragment + "'");
    }
}
