// Proves the gradient checker has teeth: deliberately wrong gradient rules must fail it, right ones pass.
package dev.biflow.engine;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.*;

class GradCheckSelfTest {

    /** y = x^2 with a gradient rule scaled by k and (optionally) the wrong sign. */
    static Tensor square(Tensor x, float k) {
        float[] y = new float[x.numel()];
        float[] xd = x.data();
        for (int i = 0; i < y.length; i++) y[i] = xd[i] * xd[i];
        return Grad.record(Tensor.of(y, x.shape()), "test_square", (g, buf) -> {
            float[] gx = buf.of(x);
            for (int i = 0; i < gx.length; i++) gx[i] += k * 2 * xd[i] * g[i];
        }, x);
    }

    /** out = a + b with b of shape (1, n) broadcast over rows; wrongReduce takes only row 0's gradient for b. */
    static Tensor addRow(Tensor a, Tensor b, boolean wrongReduce) {
        int rows = a.size(0), n = a.size(1);
        float[] o = new float[rows * n];
        for (int r = 0; r < rows; r++) for (int j = 0; j < n; j++) o[r * n + j] = a.data()[r * n + j] + b.data()[j];
        return Grad.record(Tensor.of(o, rows, n), "test_add_row", (g, buf) -> {
            float[] ga = buf.of(a), gb = buf.of(b);
            if (ga != null) for (int i = 0; i < o.length; i++) ga[i] += g[i];
            if (gb != null) for (int r = 0; r < (wrongReduce ? 1 : rows); r++) for (int j = 0; j < n; j++) gb[j] += g[r * n + j];
        }, a, b);
    }

    private static final Tensor X = TestData.awayFromZero(1, 0.3f, 2f, 3, 7);

    private static double[] sq(double[] x) {
        double[] y = new double[x.length];
        for (int i = 0; i < y.length; i++) y[i] = x[i] * x[i];
        return y;
    }

    @Test
    void rightRulePassesBothPaths() {
        GradCheck.of("square", t -> square(t[0], 1f)).ref(d -> sq(d[0])).check(X);
        GradCheck.of("square float-FD", t -> square(t[0], 1f)).check(X);
    }

    @Test
    void factorTwoFailsBothPaths() {
        assertThrows(AssertionError.class, () -> GradCheck.of("square x2", t -> square(t[0], 2f)).ref(d -> sq(d[0])).check(X));
        assertThrows(AssertionError.class, () -> GradCheck.of("square x2", t -> square(t[0], 2f)).check(X));
    }

    @Test
    void smallRelativeErrorFailsReferencePath() {
        // a 0.1% error in every element is far above float noise and must be caught
        assertThrows(AssertionError.class, () -> GradCheck.of("square 1.001", t -> square(t[0], 1.001f)).ref(d -> sq(d[0])).check(X));
    }

    @Test
    void wrongSignFailsBothPaths() {
        assertThrows(AssertionError.class, () -> GradCheck.of("square neg", t -> square(t[0], -1f)).ref(d -> sq(d[0])).check(X));
        assertThrows(AssertionError.class, () -> GradCheck.of("square neg", t -> square(t[0], -1f)).check(X));
    }

    @Test
    void wrongBroadcastReductionFailsBothPaths() {
        Tensor a = TestData.randn(2, 4, 9), b = TestData.randn(3, 1, 9);
        GradCheck.Ref ref = d -> {
            double[] o = new double[36];
            for (int r = 0; r < 4; r++) for (int j = 0; j < 9; j++) o[r * 9 + j] = d[0][r * 9 + j] + d[1][j];
            return o;
        };
        GradCheck.of("add_row", t -> addRow(t[0], t[1], false)).ref(ref).check(a, b);
        GradCheck.of("add_row float-FD", t -> addRow(t[0], t[1], false)).check(a, b);
        assertThrows(AssertionError.class, () -> GradCheck.of("add_row wrong", t -> addRow(t[0], t[1], true)).ref(ref).check(a, b));
        assertThrows(AssertionError.class, () -> GradCheck.of("add_row wrong", t -> addRow(t[0], t[1], true)).check(a, b));
    }

    @Test
    void wrongForwardFailsReferencePath() {
        assertThrows(AssertionError.class, () -> GradCheck.of("square vs cube", t -> square(t[0], 1f))
                .ref(d -> { double[] y = sq(d[0]); for (int i = 0; i < y.length; i++) y[i] *= d[0][i]; return y; }).check(X));
    }

    @Test
    void noGraphFails() {
        AssertionError e = assertThrows(AssertionError.class,
                () -> GradCheck.of("detached", t -> Ops.exp(t[0].detach())).check(X));
        assertTrue(e.getMessage().contains("no graph"), e.getMessage());
    }

    @Test
    void agreeComparesFusedAgainstComposed() {
        Tensor x = TestData.randn(10, 3, 7);
        // softClip is composite; the "fused" stand-in is the same formula through other primitives
        GradCheck.agree("softClip", t -> Ops.softClip(t[0], 2f), t -> Ops.mulScalar(Ops.tanh(Ops.mulScalar(t[0], 0.5f)), 2f), 1e-6, x);
        GradCheck.agree("sigmoid", t -> Ops.sigmoid(t[0]),
                t -> Ops.div(Tensor.ones(1), Ops.addScalar(Ops.exp(Ops.neg(t[0])), 1f)), 1e-6, x);
        assertThrows(AssertionError.class, () -> GradCheck.agree("square x2", t -> square(t[0], 2f), t -> Ops.mul(t[0], t[0]), 1e-3, X));
        assertThrows(AssertionError.class, () -> GradCheck.agree("exp vs tanh", t -> Ops.exp(t[0]), t -> Ops.tanh(t[0]), 1e-3, X));
    }

    @Test
    void floatPathPassesOnRealOps() {
        // the float-only path is what fused-op tests use; it must accept correct ops of several kinds
        GradCheck.of("gelu", t -> Ops.gelu(t[0])).check(TestData.uniform(4, -3f, 3f, 2, 9));
        GradCheck.of("mul broadcast", t -> Ops.mul(t[0], t[1])).check(TestData.randn(5, 3, 5), TestData.randn(6, 5));
        GradCheck.of("matmul", t -> Ops.matmul(t[0], t[1], false, true)).check(TestData.randn(7, 4, 6), TestData.randn(8, 5, 6));
        GradCheck.of("softmax-like", t -> Ops.div(Ops.exp(t[0]), Ops.sum(Ops.exp(t[0]), new int[]{1}, true)))
                .check(TestData.randn(9, 3, 7));
    }
}
