// Weight initialisers with PyTorch's formulas, all drawn from a seeded Rng, writing in place.
package dev.biflow.engine.nn;

import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;

import java.util.Arrays;

/**
 * In-place initialisers. Fans follow {@code torch.nn.init._calculate_fan_in_and_fan_out}:
 * fan_in = size(1) * receptive field, fan_out = size(0) * receptive field, where the receptive
 * field is the product of the dims after the first two. Every draw comes from the given
 * {@link Rng}, so a seed fixes every weight.
 *
 * <p>Modules built without an explicit Rng draw from {@link #globalRng()}, seeded 0 and
 * reseeded by {@link #manualSeed} (the analogue of {@code torch.manual_seed}).
 */
public final class Init {
    private Init() {}

    private static Rng global = new Rng(0);

    /** Reseeds the generator used by modules constructed without an explicit Rng. */
    public static synchronized void manualSeed(long seed) { global = new Rng(seed); }

    /** The process-wide default generator. */
    public static synchronized Rng globalRng() { return global; }

    public static Tensor zeros(Tensor t) { return constant(t, 0f); }

    public static Tensor ones(Tensor t) { return constant(t, 1f); }

    public static Tensor constant(Tensor t, float v) {
        Arrays.fill(t.data(), v);
        return t;
    }

    /** N(mean, std^2). */
    public static Tensor normal(Tensor t, Rng rng, double mean, double std) {
        float[] d = t.data();
        for (int i = 0; i < d.length; i++) d[i] = (float) (mean + std * rng.nextGaussian());
        return t;
    }

    /** U(lo, hi). */
    public static Tensor uniform(Tensor t, Rng rng, double lo, double hi) {
        float[] d = t.data();
        double w = hi - lo;
        for (int i = 0; i < d.length; i++) d[i] = (float) (lo + w * rng.nextDouble());
        return t;
    }

    /** N(mean, std^2) redrawn until inside [a, b] (absolute bounds, as torch.nn.init.trunc_normal_). */
    public static Tensor truncNormal(Tensor t, Rng rng, double mean, double std, double a, double b) {
        if (!(a < b)) throw new IllegalArgumentException("truncNormal: need a < b, got [" + a + ", " + b + "]");
        float[] d = t.data();
        for (int i = 0; i < d.length; i++) {
            double v;
            int tries = 0;
            do {
                v = mean + std * rng.nextGaussian();
                if (++tries > 1000)
                    throw new IllegalArgumentException("truncNormal: [" + a + ", " + b + "] is too far from N(" + mean + ", " + std + "^2)");
            } while (v < a || v > b);
            d[i] = (float) v;
        }
        return t;
    }

    /** {fan_in, fan_out} as PyTorch computes them. */
    public static int[] fans(Tensor t) {
        int[] s = t.shape();
        if (s.length < 2)
            throw new IllegalArgumentException("fan in and fan out need a tensor of rank >= 2, got shape "
                    + dev.biflow.engine.Shape.str(s));
        int rf = 1;
        for (int i = 2; i < s.length; i++) rf *= s[i];
        return new int[]{s[1] * rf, s[0] * rf};
    }

    /** Xavier/Glorot uniform: U(-a, a), a = gain * sqrt(6 / (fan_in + fan_out)). */
    public static Tensor xavierUniform(Tensor t, Rng rng, double gain) {
        int[] f = fans(t);
        double a = gain * Math.sqrt(6.0 / (f[0] + f[1]));
        return uniform(t, rng, -a, a);
    }

    /** Xavier/Glorot normal: std = gain * sqrt(2 / (fan_in + fan_out)). */
    public static Tensor xavierNormal(Tensor t, Rng rng, double gain) {
        int[] f = fans(t);
        return normal(t, rng, 0, gain * Math.sqrt(2.0 / (f[0] + f[1])));
    }

    /**
     * Kaiming/He uniform in fan_in mode with the leaky-ReLU gain sqrt(2 / (1 + a^2)):
     * U(-b, b), b = gain * sqrt(3 / fan_in). With a = sqrt(5) (PyTorch's Linear and Conv
     * default) b = 1 / sqrt(fan_in).
     */
    public static Tensor kaimingUniform(Tensor t, Rng rng, double a) {
        int fanIn = fans(t)[0];
        double gain = Math.sqrt(2.0 / (1 + a * a));
        double b = gain * Math.sqrt(3.0 / fanIn);
        return uniform(t, rng, -b, b);
    }

    /** Kaiming/He normal in fan_in mode: std = gain / sqrt(fan_in). */
    public static Tensor kaimingNormal(Tensor t, Rng rng, double a) {
        int fanIn = fans(t)[0];
        return normal(t, rng, 0, Math.sqrt(2.0 / (1 + a * a)) / Math.sqrt(fanIn));
    }

    /**
     * PyTorch's default for Linear and Conv layers: weight U(-1/sqrt(fan_in), 1/sqrt(fan_in))
     * (kaiming_uniform with a = sqrt(5)), bias (if any) U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
     * The weight is drawn first, then the bias, as PyTorch does.
     */
    public static void torchDefault(Tensor weight, Tensor bias, Rng rng) {
        kaimingUniform(weight, rng, Math.sqrt(5));
        if (bias != null) {
            int fanIn = fans(weight)[0];
            double b = fanIn > 0 ? 1.0 / Math.sqrt(fanIn) : 0;
            uniform(bias, rng, -b, b);
        }
    }
}
