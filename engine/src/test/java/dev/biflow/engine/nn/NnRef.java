// Double-precision references for the nn layers, and finite differences taken on them.
package dev.biflow.engine.nn;

import dev.biflow.engine.Tensor;
import org.apache.commons.math3.special.Erf;

import java.util.LinkedHashMap;
import java.util.Map;
import java.util.function.ToDoubleFunction;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Slow, obviously-right layer maths in double, reading parameters by state-dict name from a
 * map of double arrays. Finite differences on these references are exact to ~1e-9, so a float
 * analytic gradient can be held to float tolerance rather than to finite-difference noise.
 */
final class NnRef {
    private NnRef() {}

    static double[] d(float[] f) {
        double[] r = new double[f.length];
        for (int i = 0; i < f.length; i++) r[i] = f[i];
        return r;
    }

    /** The module's parameters as double arrays, by name. */
    static Map<String, double[]> params(Module m) {
        Map<String, double[]> out = new LinkedHashMap<>();
        for (var e : m.namedParameters().entrySet()) out.put(e.getKey(), d(e.getValue().data()));
        return out;
    }

    /** y (n, out) = x (n, in) W^T + b. */
    static double[] linear(double[] x, int n, int in, int out, double[] w, double[] b) {
        double[] y = new double[n * out];
        for (int r = 0; r < n; r++)
            for (int o = 0; o < out; o++) {
                double s = b == null ? 0 : b[o];
                for (int i = 0; i < in; i++) s += x[r * in + i] * w[o * in + i];
                y[r * out + o] = s;
            }
        return y;
    }

    static double[] layerNorm(double[] x, int n, int dim, double[] w, double[] b, double eps) {
        double[] y = new double[x.length];
        for (int r = 0; r < n; r++) {
            double mu = 0, var = 0;
            for (int i = 0; i < dim; i++) mu += x[r * dim + i];
            mu /= dim;
            for (int i = 0; i < dim; i++) var += (x[r * dim + i] - mu) * (x[r * dim + i] - mu);
            var /= dim;
            double inv = 1 / Math.sqrt(var + eps);
            for (int i = 0; i < dim; i++) {
                double v = (x[r * dim + i] - mu) * inv;
                y[r * dim + i] = w == null ? v : v * w[i] + b[i];
            }
        }
        return y;
    }

    static double gelu(double v) { return 0.5 * v * (1 + Erf.erf(v / Math.sqrt(2))); }

    /** ml-tarflow's MLP: [norm ->] Linear -> GELU -> Linear, on (n, dim). */
    static double[] mlp(Map<String, double[]> p, double[] x, int n, int dim, int hidden, boolean preNorm) {
        double[] h = preNorm ? layerNorm(x, n, dim, p.get("norm.weight"), p.get("norm.bias"), 1e-5) : x;
        double[] a = linear(h, n, dim, hidden, p.get("main.0.weight"), p.get("main.0.bias"));
        for (int i = 0; i < a.length; i++) a[i] = gelu(a[i]);
        return linear(a, n, hidden, dim, p.get("main.2.weight"), p.get("main.2.bias"));
    }

    /**
     * ml-tarflow's Attention on x (B, T, D): qkv columns [q | k | v], head h of each at columns
     * h*Dh .. h*Dh+Dh-1; logits q.k / sqrt(Dh) / temp; causal j <= i; mask (T, T) 0 = blocked.
     */
    static double[] mha(Map<String, double[]> p, double[] x, int B, int T, int D, int H, boolean causal,
                        double[] mask, double temp, boolean preNorm) {
        int dh = D / H;
        double[] h = preNorm ? layerNorm(x, B * T, D, p.get("norm.weight"), p.get("norm.bias"), 1e-5) : x;
        double[] qkv = linear(h, B * T, D, 3 * D, p.get("qkv.weight"), p.get("qkv.bias"));
        double[] o = new double[B * T * D];
        for (int b = 0; b < B; b++)
            for (int hd = 0; hd < H; hd++)
                for (int i = 0; i < T; i++) {
                    double[] logit = new double[T];
                    double mx = Double.NEGATIVE_INFINITY;
                    for (int j = 0; j < T; j++) {
                        boolean ok = (!causal || j <= i) && (mask == null || mask[i * T + j] != 0);
                        if (!ok) { logit[j] = Double.NEGATIVE_INFINITY; continue; }
                        double s = 0;
                        for (int e = 0; e < dh; e++)
                            s += qkv[(b * T + i) * 3 * D + hd * dh + e] * qkv[(b * T + j) * 3 * D + D + hd * dh + e];
                        logit[j] = s / Math.sqrt(dh) / temp;
                        mx = Math.max(mx, logit[j]);
                    }
                    double z = 0;
                    for (int j = 0; j < T; j++) { logit[j] = Math.exp(logit[j] - mx); z += logit[j]; }
                    for (int e = 0; e < dh; e++) {
                        double s = 0;
                        for (int j = 0; j < T; j++) s += logit[j] / z * qkv[(b * T + j) * 3 * D + 2 * D + hd * dh + e];
                        o[(b * T + i) * D + hd * dh + e] = s;
                    }
                }
        return linear(o, B * T, D, D, p.get("proj.weight"), p.get("proj.bias"));
    }

    /** sum(y * r). */
    static double dot(double[] y, float[] r) {
        double s = 0;
        for (int i = 0; i < y.length; i++) s += y[i] * r[i];
        return s;
    }

    /**
     * Compares the analytic gradient of a parameter (its .grad after backward of sum(y * R))
     * with central differences of the double reference loss, at up to maxCoords coordinates.
     */
    static void checkParamGrad(String name, Tensor param, Map<String, double[]> p, ToDoubleFunction<Map<String, double[]>> loss,
                               int maxCoords, double rtol, double atol) {
        float[] g = param.gradData();
        assertTrue(g != null, name + ": no gradient reached the parameter");
        double[] w = p.get(name);
        int n = w.length;
        int stride = Math.max(1, n / maxCoords);
        double scale = 0;
        double[] num = new double[n];
        for (int i = 0; i < n; i += stride) {
            double orig = w[i], h = 1e-6 * Math.max(1, Math.abs(orig));
            w[i] = orig + h;
            double lp = loss.applyAsDouble(p);
            w[i] = orig - h;
            double lm = loss.applyAsDouble(p);
            w[i] = orig;
            num[i] = (lp - lm) / (2 * h);
            scale = Math.max(scale, Math.abs(num[i]));
        }
        for (int i = 0; i < n; i += stride)
            assertEquals(num[i], g[i], rtol * Math.abs(num[i]) + atol * Math.max(1, scale),
                    name + "[" + i + "]: analytic " + g[i] + " vs numeric " + num[i]);
    }
}
