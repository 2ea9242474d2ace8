// Reductions (sum, mean, max over all / some axes) and batched matmul with every transpose combination.
package dev.biflow.engine;

import org.junit.jupiter.api.Test;
import org.quicktheories.core.Gen;
import org.quicktheories.generators.Generate;

import java.util.Arrays;
import java.util.List;

import static dev.biflow.engine.Ref.D;
import static org.junit.jupiter.api.Assertions.*;
import static org.quicktheories.QuickTheory.qt;

class OpsReduceMatmulTest {

    // ================================================================ reductions

    @Test
    void sumAndMeanOfAll() {
        Tensor x = TestData.randn(1, 3, 5, 7);
        GradCheck.of("sum", t -> Ops.sum(t[0])).ref(d -> new double[]{Arrays.stream(d[0]).sum()}).check(x);
        GradCheck.of("mean", t -> Ops.mean(t[0])).ref(d -> new double[]{Arrays.stream(d[0]).average().orElseThrow()}).check(x);
        assertArrayEquals(new int[0], Ops.sum(x).shape(), "sum of all is a scalar");
        assertEquals(0f, Ops.sum(Tensor.zeros(3, 0)).item());
        // float accumulation of 1e6 small values would drift; the sum is exact to float rounding
        Tensor many = Tensor.full(0.1f, 1_000_000);
        assertEquals(100000.0, Ops.sum(many).item(), 0.01);
    }

    /** A tensor shape and a subset of its axes (possibly negative, in any order) to reduce. */
    record RCase(int[] shape, int[] axes, boolean keep) {
        @Override public String toString() { return Shape.str(shape) + " axes " + Arrays.toString(axes) + " keep " + keep; }
    }

    static Gen<RCase> rcases() {
        Gen<int[]> dims = Generate.intArrays(Generate.range(1, 4), Generate.pick(List.of(1, 2, 3, 5, 9, 4, 8)));
        Gen<int[]> picks = Generate.intArrays(Generate.range(1, 4), Generate.range(0, 7));
        return dims.zip(picks, Generate.booleans(), (d, p, keep) -> {
            int r = d.length;
            boolean[] used = new boolean[r];
            int[] axes = new int[0];
            for (int v : p) {
                int ax = v % r;
                if (used[ax]) continue;
                used[ax] = true;
                axes = Shape.concat(axes, v >= r ? ax - r : ax); // some axes given as negative
            }
            return new RCase(d, axes, keep);
        });
    }

    @Test
    void sumMeanMaxOverAxesProperty() {
        qt().withFixedSeed(7).withExamples(80).forAll(rcases()).checkAssert(c -> {
            Tensor x = TestData.randn(3, c.shape()); // continuous values: no ties for max
            D ref = Ref.sum(D.of(x), c.axes(), c.keep());
            assertArrayEquals(ref.s(), Ops.sum(x, c.axes(), c.keep()).shape(), "sum shape " + c);
            GradCheck.of("sum " + c, t -> Ops.sum(t[0], c.axes(), c.keep()))
                    .ref(d -> Ref.sum(new D(d[0], c.shape()), c.axes(), c.keep()).v()).check(x);
            GradCheck.of("mean " + c, t -> Ops.mean(t[0], c.axes(), c.keep()))
                    .ref(d -> Ref.mean(new D(d[0], c.shape()), c.axes(), c.keep()).v()).check(x);
            GradCheck.of("max " + c, t -> Ops.max(t[0], c.axes(), c.keep()))
                    .ref(d -> Ref.max(new D(d[0], c.shape()), c.axes(), c.keep()).v()).check(x);
        });
    }

    @Test
    void tensorShortcutsReduceOneAxis() {
        Tensor x = TestData.randn(4, 2, 3, 4);
        assertArrayEquals(Ops.sum(x, new int[]{1}, false).data(), x.sum(1, false).data());
        assertArrayEquals(new int[]{2, 1, 4}, x.mean(-2, true).shape());
    }

    @Test
    void sumOverEveryAxisEqualsSumOfAll() {
        Tensor x = TestData.randn(5, 3, 4, 5);
        Tensor all = Ops.sum(x, new int[]{0, 1, 2}, false);
        assertArrayEquals(new int[0], all.shape());
        assertEquals(Ops.sum(x).item(), all.item(), 1e-4);
        assertArrayEquals(new int[]{1, 1, 1}, Ops.sum(x, new int[]{2, 0, 1}, true).shape());
    }

    @Test
    void largeAxisSumsAcrossParallelChunks() {
        // outer * n * inner above the grain so the reduction splits across threads
        Tensor x = TestData.randn(6, 37, 29, 41);
        for (int ax = 0; ax < 3; ax++) {
            D ref = Ref.sum(D.of(x), new int[]{ax}, false);
            OpsElementwiseTest.assertClose(ref.v(), Ops.sum(x, new int[]{ax}, false).data(), 1e-5, "sum axis " + ax);
        }
    }

    @Test
    void maxTiesSendTheGradientToTheFirstMaximum() {
        Tensor x = Tensor.of(new float[]{1, 3, 3, 2, 5, 5, 5, 0}, 2, 4).requiresGrad(true);
        Tensor m = Ops.max(x, new int[]{1}, false);
        assertArrayEquals(new float[]{3, 5}, m.data());
        Ops.sum(m).backward();
        assertArrayEquals(new float[]{0, 1, 0, 0, 1, 0, 0, 0}, x.gradData());
    }

    @Test
    void maxPropagatesNaN() {
        Tensor x = Tensor.of(new float[]{1, Float.NaN, 3, 4, 2, Float.NaN}, 2, 3);
        float[] m = Ops.max(x, new int[]{1}, false).data();
        assertTrue(Float.isNaN(m[0]) && Float.isNaN(m[1]), Arrays.toString(m));
        assertTrue(Float.isNaN(Ops.max(x, new int[]{0, 1}, false).item()));
    }

    @Test
    void maxOfNegativeValuesAndInfinities() {
        Tensor x = Tensor.of(new float[]{-5, -3, Float.NEGATIVE_INFINITY, -7}, 4);
        assertEquals(-3f, Ops.max(x, new int[]{0}, false).item());
        assertEquals(Float.NEGATIVE_INFINITY, Ops.max(Tensor.full(Float.NEGATIVE_INFINITY, 3), new int[]{0}, false).item());
    }

    // ================================================================ matmul

    record MCase(int[] batch, int m, int n, int k, boolean ta, boolean tb, boolean sharedB) {
        int[] aShape() { return Shape.concat(batch, ta ? new int[]{k, m} : new int[]{m, k}); }
        int[] bShape() { return Shape.concat(sharedB ? new int[0] : batch, tb ? new int[]{n, k} : new int[]{k, n}); }
        @Override public String toString() {
            return Shape.str(aShape()) + (ta ? "^T" : "") + " @ " + Shape.str(bShape()) + (tb ? "^T" : "");
        }
    }

    static Gen<MCase> mcases() {
        Gen<Integer> dim = Generate.pick(List.of(1, 2, 3, 5, 8, 9, 4, 17));
        Gen<int[]> batch = Generate.pick(List.of(new int[0], new int[]{2}, new int[]{3}, new int[]{2, 3}));
        Gen<int[]> mnk = Generate.intArrays(Generate.constant(3), dim);
        Gen<int[]> flags = Generate.intArrays(Generate.constant(3), Generate.range(0, 1));
        return batch.zip(mnk, flags, (b, d, f) -> new MCase(b, d[0], d[1], d[2], f[0] == 1, f[1] == 1, f[2] == 1));
    }

    private static void checkMatmul(MCase c) {
        Tensor a = TestData.randn(21, c.aShape()), b = TestData.randn(22, c.bShape());
        Tensor out = Ops.matmul(a, b, c.ta(), c.tb());
        assertArrayEquals(Shape.concat(c.batch(), c.m(), c.n()), out.shape(), "matmul shape " + c);
        GradCheck.of("matmul " + c, t -> Ops.matmul(t[0], t[1], c.ta(), c.tb()))
                .ref(d -> Ref.matmul(new D(d[0], c.aShape()), new D(d[1], c.bShape()), c.ta(), c.tb()).v())
                .fwdTol(1e-5, 1e-5).check(a, b);
    }

    @Test
    void matmulProperty() {
        qt().withFixedSeed(8).withExamples(80).forAll(mcases()).checkAssert(OpsReduceMatmulTest::checkMatmul);
    }

    /** Every combination written out once, so a failure names the combination without shrinking. */
    @Test
    void matmulAllTransposeCombos() {
        for (int[] batch : new int[][]{{}, {3}, {2, 2}})
            for (boolean ta : new boolean[]{false, true})
                for (boolean tb : new boolean[]{false, true})
                    for (boolean shared : new boolean[]{false, true})
                        checkMatmul(new MCase(batch, 5, 7, 9, ta, tb, shared));
    }

    /** The fused linear layer (bias as GEMM start value) against x w^T + b in double, with and without bias. */
    @Test
    void linearAgainstReferenceAndFiniteDifferences() {
        for (int[] d : new int[][]{{1, 1, 1}, {5, 7, 9}, {33, 17, 19}, {3, 40, 130}}) {
            int n = d[0], in = d[1], out = d[2];
            Tensor x = TestData.randn(31, n, in), w = TestData.randn(32, out, in), b = TestData.randn(33, out);
            GradCheck.of("linear " + Arrays.toString(d), t -> Ops.linear(t[0], t[1], t[2]))
                    .ref(v -> {
                        double[] y = Ref.matmul(new D(v[0], x.shape()), new D(v[1], w.shape()), false, true).v();
                        for (int i = 0; i < n; i++) for (int j = 0; j < out; j++) y[i * out + j] += v[2][j];
                        return y;
                    }).fwdTol(1e-5, 1e-5).check(x, w, b);
            GradCheck.of("linear no bias " + Arrays.toString(d), t -> Ops.linear(t[0], t[1], null))
                    .ref(v -> Ref.matmul(new D(v[0], x.shape()), new D(v[1], w.shape()), false, true).v())
                    .fwdTol(1e-5, 1e-5).check(x, w);
        }
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> Ops.linear(Tensor.zeros(2, 3), Tensor.zeros(4, 5), null));
        assertTrue(e.getMessage().contains("(N, in) and (out, in)"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> Ops.linear(Tensor.zeros(2, 3), Tensor.zeros(4, 3), Tensor.zeros(3)));
        assertTrue(e.getMessage().contains("bias"), e.getMessage());
    }

    @Test
    void matmulBatchedLargeEnoughToRunSerialOverBatch() {
        // m*n*k above 2^22 takes the serial-over-batch branch (GEMMs parallel inside)
        MCase c = new MCase(new int[]{2}, 170, 160, 160, false, true, false);
        Tensor a = TestData.randn(23, c.aShape()), b = TestData.randn(24, c.bShape());
        float[] out = Ops.matmul(a, b, false, true).data();
        Rng r = new Rng(3);
        for (int t = 0; t < 300; t++) { // sampled entries: the full double reference is slow at this size
            int bi = r.nextInt(2), i = r.nextInt(170), j = r.nextInt(160);
            double s = 0;
            for (int p = 0; p < 160; p++) s += (double) a.data()[(bi * 170 + i) * 160 + p] * b.data()[(bi * 160 + j) * 160 + p];
            assertEquals(s, out[(bi * 170 + i) * 160 + j], 1e-4 * Math.max(1, Math.abs(s)), "entry " + bi + "," + i + "," + j);
        }
    }

    @Test
    void matmulZeroInnerDimensionGivesZeros() {
        Tensor c = Ops.matmul(Tensor.zeros(3, 0), Tensor.zeros(0, 4), false, false);
        assertArrayEquals(new int[]{3, 4}, c.shape());
        assertArrayEquals(new float[12], c.data());
    }

    @Test
    void matmulZeroSizedOperandsAndGradients() {
        for (MCase c : new MCase[]{new MCase(new int[0], 0, 4, 3, false, false, true), new MCase(new int[0], 2, 0, 3, true, false, true),
                new MCase(new int[]{0}, 2, 4, 3, false, true, false), new MCase(new int[]{2}, 2, 4, 0, true, true, true)}) {
            Tensor a = Tensor.ones(c.aShape()).requiresGrad(true), b = Tensor.ones(c.bShape()).requiresGrad(true);
            Tensor out = Ops.matmul(a, b, c.ta(), c.tb());
            assertArrayEquals(Shape.concat(c.batch(), c.m(), c.n()), out.shape(), c.toString());
            for (float v : out.data()) assertEquals(0f, v, c.toString());
            if (out.numel() > 0) Ops.sum(out).backward();
            else out.backward(Tensor.zeros(out.shape()));
            for (float v : a.gradData()) assertEquals(0f, v);
            for (float v : b.gradData()) assertEquals(0f, v);
        }
    }

    @Test
    void matmulOneSidedGradients() {
        for (MCase c : new MCase[]{new MCase(new int[]{2}, 3, 5, 4, false, false, true), new MCase(new int[]{2}, 3, 5, 4, true, true, false),
                new MCase(new int[]{2}, 3, 5, 4, true, false, true)})
            for (int side = 0; side < 2; side++) {
                Tensor a = TestData.randn(27, c.aShape()), b = TestData.randn(28, c.bShape());
                GradCheck.of("matmul wrt " + side + " " + c, t -> Ops.matmul(t[0], t[1], c.ta(), c.tb()))
                        .ref(d -> Ref.matmul(new D(d[0], c.aShape()), new D(d[1], c.bShape()), c.ta(), c.tb()).v())
                        .wrt(side).check(a, b);
            }
    }

    @Test
    void tensorMatmulShortcut() {
        Tensor a = TestData.randn(25, 2, 3), b = TestData.randn(26, 3, 4);
        assertArrayEquals(Ops.matmul(a, b, false, false).data(), a.matmul(b).data());
    }
}
