// Seeded test inputs: normal, uniform and away-from-zero tensors, and readable shape strings.
package dev.biflow.engine;

import java.util.Arrays;

/** Input generators for op tests. Values come from the engine's Rng so every run sees the same numbers. */
final class TestData {
    private TestData() {}

    static Tensor randn(long seed, int... shape) { return Tensor.randn(new Rng(seed), shape); }

    static Tensor uniform(long seed, float lo, float hi, int... shape) {
        Tensor t = Tensor.rand(new Rng(seed), shape);
        float[] d = t.data();
        for (int i = 0; i < d.length; i++) d[i] = lo + (hi - lo) * d[i];
        return t;
    }

    /** Values with |x| in [lo, hi] and a random sign: safe denominators, and no kinks nearby. */
    static Tensor awayFromZero(long seed, float lo, float hi, int... shape) {
        Rng r = new Rng(seed);
        float[] d = new float[Ref.numel(shape)];
        for (int i = 0; i < d.length; i++) d[i] = (r.nextFloat() < 0.5f ? -1 : 1) * (lo + (hi - lo) * r.nextFloat());
        return Tensor.of(d, shape);
    }

    /** Normal values kept at least gap away from every kink point (relu, abs, clamp bounds). */
    static Tensor avoiding(long seed, float scale, float gap, float[] kinks, int... shape) {
        Rng r = new Rng(seed);
        float[] d = new float[Ref.numel(shape)];
        for (int i = 0; i < d.length; i++) {
            float v;
            boolean ok;
            do {
                v = (float) (scale * r.nextGaussian());
                ok = true;
                for (float k : kinks) if (Math.abs(v - k) < gap) ok = false;
            } while (!ok);
            d[i] = v;
        }
        return Tensor.of(d, shape);
    }

    static String str(int[] s) { return Shape.str(s); }

    static String str(int[][] ss) {
        StringBuilder b = new StringBuilder();
        for (int[] s : ss) b.append(Shape.str(s)).append(' ');
        return b.toString().trim();
    }

    static int[] dropLeading(int[] s, int n) { return Arrays.copyOfRange(s, Math.min(n, s.length), s.length); }
}
