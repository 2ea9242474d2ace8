// Broadcasting binary ops, scalar ops and unary ops: forward against double references, gradients via GradCheck.
package dev.biflow.engine;

import org.apache.commons.math3.special.Erf;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.quicktheories.core.Gen;
import org.quicktheories.generators.Generate;

import java.util.Arrays;
import java.util.List;
import java.util.function.DoubleBinaryOperator;
import java.util.function.DoubleUnaryOperator;
import java.util.function.Function;

import static dev.biflow.engine.Ref.D;
import static org.junit.jupiter.api.Assertions.*;
import static org.quicktheories.QuickTheory.qt;

class OpsElementwiseTest {

    // ================================================================ broadcasting binary ops

    /** Two operand shapes that broadcast together. */
    record BCase(int[] a, int[] b) {
        @Override public String toString() { return Shape.str(a) + " op " + Shape.str(b); }
    }

    /**
     * Shape pairs: an output shape of rank 0..4 with sizes around the vector width (1, 7, 8, 9, 17, ...),
     * then per axis a mode (both full, a has 1, b has 1, both 1), then leading axes dropped from one
     * side (rank difference). Capped at maxNumel so finite differences stay cheap.
     */
    static Gen<BCase> bcases(int maxNumel) {
        Gen<Integer> dim = Generate.pick(List.of(1, 2, 3, 5, 8, 9, 4, 7, 17));
        Gen<int[]> dims = Generate.intArrays(Generate.range(0, 4), dim);
        Gen<int[]> modes = Generate.intArrays(Generate.range(0, 4), Generate.range(0, 3));
        Gen<Integer> drop = Generate.range(-3, 3);
        return dims.zip(modes, drop, (d, m, dr) -> {
            int[] os = d.clone();
            for (int i = 0; i < os.length && Ref.numel(os) > maxNumel; i++) os[i] = Math.min(os[i], 2);
            int[] a = os.clone(), b = os.clone();
            for (int i = 0; i < os.length; i++) {
                int mode = i < m.length ? m[i] : 0;
                if (mode == 1 || mode == 3) a[i] = 1;
                if (mode == 2 || mode == 3) b[i] = 1;
            }
            if (dr < 0) a = TestData.dropLeading(a, -dr);
            if (dr > 0) b = TestData.dropLeading(b, dr);
            return new BCase(a, b);
        });
    }

    private static final DoubleBinaryOperator ADD = (x, y) -> x + y, SUB = (x, y) -> x - y, MUL = (x, y) -> x * y, DIV = (x, y) -> x / y;

    private static void checkBinary(String name, BCase c, java.util.function.BinaryOperator<Tensor> op, DoubleBinaryOperator ref) {
        Tensor a = TestData.randn(11, c.a());
        // denominators away from zero so the quotient and its derivative are tame
        Tensor b = name.equals("div") ? TestData.awayFromZero(12, 0.5f, 2f, c.b()) : TestData.randn(12, c.b());
        Tensor out = op.apply(a, b);
        assertArrayEquals(Ref.broadcast(c.a(), c.b()), out.shape(), name + " output shape for " + c);
        GradCheck.of(name + " " + c, x -> op.apply(x[0], x[1]))
                .ref(x -> Ref.binary(new D(x[0], c.a()), new D(x[1], c.b()), ref).v())
                .check(a, b);
    }

    @Test
    void addBroadcastProperty() {
        qt().withFixedSeed(1).withExamples(60).forAll(bcases(400)).checkAssert(c -> checkBinary("add", c, Ops::add, ADD));
    }

    @Test
    void subBroadcastProperty() {
        qt().withFixedSeed(2).withExamples(60).forAll(bcases(400)).checkAssert(c -> checkBinary("sub", c, Ops::sub, SUB));
    }

    @Test
    void mulBroadcastProperty() {
        qt().withFixedSeed(3).withExamples(60).forAll(bcases(400)).checkAssert(c -> checkBinary("mul", c, Ops::mul, MUL));
    }

    @Test
    void divBroadcastProperty() {
        qt().withFixedSeed(4).withExamples(60).forAll(bcases(400)).checkAssert(c -> checkBinary("div", c, Ops::div, DIV));
    }

    /** Broadcast in both directions on the same axis pair, with operand order swapped: not symmetric for sub/div. */
    @Test
    void broadcastBothWaysAndSwapped() {
        for (int[][] p : new int[][][]{{{4, 1, 9}, {1, 3, 1}}, {{1, 3, 1}, {4, 1, 9}}, {{9}, {5, 1, 9}}, {{}, {2, 17}},
                {{2, 17}, {}}, {{3, 1, 1, 8}, {1, 2, 5, 1}}})
            for (String op : List.of("add", "sub", "mul", "div")) {
                BCase c = new BCase(p[0], p[1]);
                switch (op) {
                    case "add" -> checkBinary(op, c, Ops::add, ADD);
                    case "sub" -> checkBinary(op, c, Ops::sub, SUB);
                    case "mul" -> checkBinary(op, c, Ops::mul, MUL);
                    default -> checkBinary(op, c, Ops::div, DIV);
                }
            }
    }

    /**
     * Sizes above the parallel grain (32768), both the same-shape (Vector API) path and the
     * broadcast (row) path, with odd lengths so chunks split mid-vector. Gradients are checked
     * against the closed form in double (finite differences would be too slow at this size).
     */
    @Test
    void largeBinaryOpsAgainstClosedFormGradients() {
        int[][][] pairs = {{{40003}, {40003}}, {{41, 7, 131}, {7, 1}}, {{3, 1, 11003}, {1, 4, 11003}}};
        for (int[][] p : pairs) {
            Tensor a = TestData.randn(5, p[0]), b = TestData.awayFromZero(6, 0.5f, 2f, p[1]);
            D ad = D.of(a), bd = D.of(b);
            for (String op : List.of("add", "sub", "mul", "div")) {
                Tensor la = a.copy().requiresGrad(true), lb = b.copy().requiresGrad(true);
                Tensor out = switch (op) {
                    case "add" -> Ops.add(la, lb);
                    case "sub" -> Ops.sub(la, lb);
                    case "mul" -> Ops.mul(la, lb);
                    default -> Ops.div(la, lb);
                };
                D ref = Ref.binary(ad, bd, switch (op) { case "add" -> ADD; case "sub" -> SUB; case "mul" -> MUL; default -> DIV; });
                assertClose(ref.v(), out.data(), 1e-6, op + " forward " + TestData.str(p));
                Tensor r = TestData.randn(7, out.shape());
                out.backward(r);
                D rd = D.of(r);
                D gaFull = switch (op) {
                    case "add", "sub" -> Ref.expand(rd, ref.s());
                    case "mul" -> Ref.binary(rd, bd, MUL);
                    default -> Ref.binary(rd, bd, DIV);
                };
                D gbFull = switch (op) {
                    case "add" -> Ref.expand(rd, ref.s());
                    case "sub" -> Ref.map(Ref.expand(rd, ref.s()), v -> -v);
                    case "mul" -> Ref.binary(rd, ad, MUL);
                    default -> Ref.binary(Ref.binary(rd, ad, MUL), Ref.binary(bd, bd, MUL), (x, y) -> -x / y);
                };
                assertClose(Ref.sumTo(gaFull, p[0]).v(), la.gradData(), 2e-5, op + " grad a " + TestData.str(p));
                assertClose(Ref.sumTo(gbFull, p[1]).v(), lb.gradData(), 2e-5, op + " grad b " + TestData.str(p));
            }
        }
    }

    /** Only one operand needs a gradient: the rule must leave the other alone (its buffer is null). */
    @Test
    void oneSidedGradients() {
        for (int[][] p : new int[][][]{{{3, 9}, {3, 9}}, {{3, 9}, {9}}, {{1, 9}, {3, 1}}})
            for (int side = 0; side < 2; side++) {
                Tensor a = TestData.randn(41, p[0]), b = TestData.awayFromZero(42, 0.5f, 2f, p[1]);
                int[] sa = p[0], sb = p[1];
                for (String op : List.of("add", "sub", "mul", "div")) {
                    DoubleBinaryOperator f = switch (op) { case "add" -> ADD; case "sub" -> SUB; case "mul" -> MUL; default -> DIV; };
                    GradCheck.of(op + " wrt " + side + " " + TestData.str(p), t -> switch (op) {
                                case "add" -> Ops.add(t[0], t[1]);
                                case "sub" -> Ops.sub(t[0], t[1]);
                                case "mul" -> Ops.mul(t[0], t[1]);
                                default -> Ops.div(t[0], t[1]);
                            }).ref(d -> Ref.binary(new D(d[0], sa), new D(d[1], sb), f).v()).wrt(side).check(a, b);
                }
            }
    }

    @Test
    void zeroSizeBroadcasts() {
        assertArrayEquals(new int[]{0, 3}, Ops.add(Tensor.zeros(0, 3), Tensor.ones(1, 3)).shape());
        assertArrayEquals(new int[]{2, 0}, Ops.mul(Tensor.zeros(2, 1), Tensor.ones(0)).shape());
        Tensor b = Tensor.ones(3).requiresGrad(true);
        Ops.sum(Ops.mul(Tensor.zeros(0, 3), b)).backward();
        assertArrayEquals(new float[3], b.gradData(), "no rows: zero gradient for the broadcast operand");
        assertArrayEquals(new int[]{0, 3}, Ops.expand(Tensor.ones(1, 3), 0, 3).shape());
    }

    @Test
    void nanPropagatesThroughActivations() {
        Tensor x = Tensor.of(new float[]{Float.NaN}, 1);
        // a NaN that an activation turned into a number would hide a diverging run
        for (var op : List.<Function<Tensor, Tensor>>of(Ops::relu, Ops::abs, Ops::sigmoid, Ops::tanh, Ops::silu, Ops::gelu,
                Ops::geluTanh, Ops::exp, t -> Ops.clamp(t, -1, 1)))
            assertTrue(Float.isNaN(op.apply(x).item()), op.apply(x).toString());
    }

    /** |ref - got| <= tol * max(1, |ref|) elementwise, naming the first bad index. */
    static void assertClose(double[] ref, float[] got, double tol, String what) {
        assertEquals(ref.length, got.length, what + ": length");
        for (int i = 0; i < ref.length; i++)
            if (!(Math.abs(ref[i] - got[i]) <= tol * Math.max(1, Math.abs(ref[i]))))
                fail(what + ": index " + i + " got " + got[i] + ", expected " + ref[i]);
    }

    @Test
    void sameTensorOnBothSidesGetsBothContributions() {
        Tensor x = TestData.randn(3, 2, 9);
        GradCheck.of("x*x", t -> Ops.mul(t[0], t[0])).ref(d -> Ref.map(new D(d[0], x.shape()), v -> v * v).v()).check(x);
        GradCheck.of("x/x", t -> Ops.div(t[0], t[0])).ref(d -> Ref.map(new D(d[0], x.shape()), v -> 1).v())
                .check(TestData.awayFromZero(4, 0.5f, 2f, 2, 9));
        GradCheck.of("x-x broadcast", t -> Ops.sub(t[0], Ops.reshape(t[0], 1, 2, 9)))
                .ref(d -> new double[d[0].length]).check(x);
    }

    @Test
    void expandAndWhere() {
        Tensor x = TestData.randn(1, 3, 1);
        int[] to = {2, 3, 9};
        GradCheck.of("expand", t -> Ops.expand(t[0], to)).ref(d -> Ref.expand(new D(d[0], x.shape()), to).v()).check(x);
        Tensor v = TestData.randn(2, 9);
        GradCheck.of("expand rank", t -> Ops.expand(t[0], 4, 9)).ref(d -> Ref.expand(new D(d[0], new int[]{9}), new int[]{4, 9}).v())
                .check(TestData.randn(3, 9));
        assertArrayEquals(v.data(), Ops.expand(v, 9).data(), "expand to the same shape is the identity");

        Tensor cond = Tensor.of(new float[]{1, 0, 0, 1, 1, 0, 1, 0, 0, 0, 1, 1}, 3, 4);
        Tensor a = TestData.randn(5, 3, 1), b = TestData.randn(6, 4);
        GradCheck.of("where", t -> Ops.where(cond, t[0], t[1]))
                .ref(d -> Ref.where(D.of(cond), new D(d[0], a.shape()), new D(d[1], b.shape())).v()).check(a, b);
        // the same tensor on both branches gets the whole gradient
        Tensor s = TestData.randn(7, 3, 4);
        GradCheck.of("where same", t -> Ops.where(cond, t[0], t[0])).ref(d -> d[0].clone()).check(s);
        Tensor cb = Tensor.of(new float[]{1, 0, 1, 0}, 4); // cond broadcast
        GradCheck.of("where cond broadcast", t -> Ops.where(cb, t[0], t[1]))
                .ref(d -> Ref.where(D.of(cb), new D(d[0], new int[]{3, 4}), new D(d[1], new int[]{})).v())
                .check(TestData.randn(8, 3, 4), Tensor.scalar(2.5f));
    }

    @Test
    void whereGivesNoGradientToCondition() {
        Tensor cond = Tensor.of(new float[]{1, 0}, 2).requiresGrad(true);
        Tensor a = Tensor.ones(2).requiresGrad(true), b = Tensor.zeros(2);
        Ops.sum(Ops.where(cond, a, b)).backward();
        assertNull(cond.gradData());
        assertArrayEquals(new float[]{1, 0}, a.gradData());
    }

    // ================================================================ scalar variants

    @Test
    void scalarOps() {
        Tensor x = TestData.randn(21, 3, 11);
        int[] s = x.shape();
        check1("addScalar", t -> Ops.addScalar(t, 1.75f), v -> v + 1.75f, x);
        check1("mulScalar", t -> Ops.mulScalar(t, -0.3f), v -> v * (double) -0.3f, x);
        check1("neg", Ops::neg, v -> -v, x);
        check1("rsub", t -> Ops.rsub(2f, t), v -> 2 - v, x);
        check1("square", Ops::square, v -> v * v, x);
        check1("Tensor.sub(float)", t -> t.sub(0.5f), v -> v - 0.5, x);
        check1("Tensor.div(float)", t -> t.div(4f), v -> v / 4, x);
        assertArrayEquals(s, Ops.addScalar(x, 1).shape());
        // a scalar tensor goes through the same ops
        check1("mulScalar on a scalar", t -> Ops.mulScalar(t, 3f), v -> 3 * v, Tensor.scalar(0.7f));
    }

    /** A unary op on tensor x: forward against f in double, gradient through GradCheck. */
    static void check1(String name, Function<Tensor, Tensor> op, DoubleUnaryOperator f, Tensor x) {
        GradCheck.of(name, t -> op.apply(t[0])).ref(d -> Ref.map(new D(d[0], x.shape()), f).v()).check(x);
    }

    static void check1(String name, Function<Tensor, Tensor> op, DoubleUnaryOperator f, Tensor x, double fwdRtol, double fwdAtol) {
        GradCheck.of(name, t -> op.apply(t[0])).ref(d -> Ref.map(new D(d[0], x.shape()), f).v()).fwdTol(fwdRtol, fwdAtol).check(x);
    }

    // ================================================================ unary

    private static final int[] U = {3, 37}; // 111 elements: vector body plus a 7-element tail

    @Test
    void expLogSqrt() {
        check1("exp", Ops::exp, Math::exp, TestData.randn(31, U).mul(2f));
        check1("log", Ops::log, Math::log, TestData.uniform(32, 0.1f, 5f, U));
        check1("sqrt", Ops::sqrt, Math::sqrt, TestData.uniform(33, 0.1f, 5f, U));
    }

    @ParameterizedTest
    @ValueSource(floats = {2f, 3f, 1f, 0.5f, -1.5f, 1.7f, -2f})
    void pow(float p) {
        boolean integer = p == Math.rint(p);
        // non-integer exponents need a positive base; integer ones are checked on both signs
        Tensor x = integer ? TestData.awayFromZero(34, 0.2f, 2f, U) : TestData.uniform(35, 0.2f, 2f, U);
        check1("pow " + p, t -> Ops.pow(t, p), v -> Math.pow(v, p), x);
    }

    @Test
    void powZeroExponentHasZeroGradientEverywhere() {
        Tensor x = Tensor.of(new float[]{0f, 2f, -1f}, 3).requiresGrad(true);
        Tensor y = Ops.pow(x, 0f);
        assertArrayEquals(new float[]{1, 1, 1}, y.data());
        Ops.sum(y).backward();
        assertArrayEquals(new float[]{0, 0, 0}, x.gradData(), "d/dx x^0 = 0, also at x = 0");
    }

    @Test
    void tanhSigmoidSilu() {
        Tensor x = TestData.randn(36, U).mul(3f);
        check1("tanh", Ops::tanh, Math::tanh, x);
        check1("sigmoid", Ops::sigmoid, v -> 1 / (1 + Math.exp(-v)), x);
        check1("silu", Ops::silu, v -> v / (1 + Math.exp(-v)), x);
        check1("softClip", t -> Ops.softClip(t, 2f), v -> 2 * Math.tanh(v / 2), x);
        check1("softClip c=4", t -> Ops.softClip(t, 4f), v -> 4 * Math.tanh(v / 4), x.mul(3f));
    }

    @Test
    void saturatingOpsStayFiniteAtExtremes() {
        Tensor x = Tensor.of(new float[]{-1000f, -100f, -20f, 0f, 20f, 100f, 1000f}, 7).requiresGrad(true);
        Tensor s = Ops.sigmoid(x), t = Ops.tanh(x), si = Ops.silu(x), g = Ops.gelu(x), gt = Ops.geluTanh(x);
        for (Tensor y : List.of(s, t, si, g, gt))
            for (float v : y.data()) assertTrue(Float.isFinite(v), y + " has a non-finite value");
        assertEquals(0f, s.data()[0]);
        assertEquals(1f, s.data()[6]);
        assertEquals(0.5f, s.data()[3]);
        assertEquals(1000f, g.data()[6]);
        assertEquals(0f, g.data()[0], 0f);
        Ops.sum(Ops.add(Ops.add(s, t), Ops.add(si, Ops.add(g, gt)))).backward();
        for (float v : x.gradData()) assertTrue(Float.isFinite(v), "gradient " + Arrays.toString(x.gradData()));
    }

    @Test
    void geluExactAgainstCommonsMathErf() {
        Tensor x = TestData.uniform(37, -5f, 5f, U);
        // NR's erf is good to ~1.2e-7 absolute: the forward tolerance is that times |x|/2, plus float rounding
        check1("gelu", Ops::gelu, v -> 0.5 * v * (1 + Erf.erf(v / Math.sqrt(2))), x, 1e-6, 5e-7);
        for (double v = -8; v <= 8; v += 0.01)
            assertEquals(Erf.erf(v), Ops.erf(v), 2e-7, "erf(" + v + ")");
    }

    @Test
    void geluTanhIsTheTanhApproximationAndDiffersFromExact() {
        Tensor x = TestData.uniform(38, -5f, 5f, U);
        check1("geluTanh", Ops::geluTanh, v -> 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v * v * v))), x);
        // the two GELUs differ by up to ~2e-4; a forward check at 1e-6 tells them apart
        Tensor grid = TestData.uniform(40, -4f, 4f, 1000);
        float[] e = Ops.gelu(grid).data(), t = Ops.geluTanh(grid).data();
        double maxDiff = 0;
        for (int i = 0; i < e.length; i++) maxDiff = Math.max(maxDiff, Math.abs(e[i] - t[i]));
        assertTrue(maxDiff > 1e-4, "gelu and geluTanh differ by only " + maxDiff);
    }

    @Test
    void reluAbsClampAwayFromKinks() {
        Tensor x = TestData.avoiding(39, 1.5f, 1e-3f, new float[]{0f, -0.5f, 0.7f}, U);
        check1("relu", Ops::relu, v -> Math.max(0, v), x);
        check1("abs", Ops::abs, Math::abs, x);
        check1("clamp", t -> Ops.clamp(t, -0.5f, 0.7f), v -> Math.min(0.7f, Math.max(-0.5f, v)), x);
    }

    /** The subgradient each op picks at its kink: relu'(0) = 0, abs'(0) = 0, clamp passes at its bounds. */
    @Test
    void kinkConventions() {
        Tensor x = Tensor.of(new float[]{0f, -0f, -0.5f, 0.7f}, 4);
        assertArrayEquals(new float[]{0, 0, 0, 1}, gradOf(Ops::relu, x.copy()).data());
        assertArrayEquals(new float[]{0, 0, -1, 1}, gradOf(Ops::abs, x.copy()).data());
        assertArrayEquals(new float[]{1, 1, 1, 1}, gradOf(t -> Ops.clamp(t, -0.5f, 0.7f), x.copy()).data());
        assertArrayEquals(new float[]{0, 0, 0, 0}, gradOf(t -> Ops.clamp(t, 0.1f, 0.2f), x.copy()).data());
    }

    static Tensor gradOf(Function<Tensor, Tensor> op, Tensor x) {
        x.requiresGrad(true);
        Ops.sum(op.apply(x)).backward();
        return x.grad();
    }

    /** Every unary op: the output has the input's shape and sizes 0 and 1 work. */
    @Test
    void unaryOnEmptyAndScalar() {
        List<Function<Tensor, Tensor>> ops = List.of(Ops::exp, Ops::log, Ops::sqrt, t -> Ops.pow(t, 2), Ops::tanh, Ops::sigmoid,
                Ops::relu, Ops::silu, Ops::gelu, Ops::geluTanh, Ops::abs, t -> Ops.clamp(t, 0, 1), t -> Ops.softClip(t, 3), Ops::neg);
        for (Function<Tensor, Tensor> op : ops) {
            assertArrayEquals(new int[]{2, 0, 3}, op.apply(Tensor.zeros(2, 0, 3)).shape());
            Tensor s = op.apply(Tensor.scalar(0.5f));
            assertArrayEquals(new int[0], s.shape());
        }
    }
}
