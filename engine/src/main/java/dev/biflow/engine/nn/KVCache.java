// Keys and values of the tokens seen so far, for incremental (token-by-token) causal attention.
package dev.biflow.engine.nn;

import dev.biflow.engine.Grad;
import dev.biflow.engine.Shape;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.kernels.Parallel;
import dev.biflow.engine.kernels.Vec;

/**
 * One attention layer's cache: k and v of shape (B, H, T_seen, Dh), stored in buffers that
 * grow by doubling, so appending a token costs O(B H Dh) instead of re-copying the whole cache
 * (which made exact-inverse sampling quadratic in copying at 196 tokens). {@link
 * MultiHeadAttention} appends the new tokens' k and v, then attends from the new queries only
 * through {@link #attend}, a decode kernel that reads the buffers in place. Each layer needs its
 * own cache, and a guided sampler keeps separate caches for its conditional and unconditional
 * passes (ml-tarflow's {@code which_cache='cond'/'uncond'}).
 */
public final class KVCache {
    private float[] kBuf, vBuf; // (B, H, cap, Dh)
    private int b, h, dh, cap, len;

    /** Tokens cached so far. */
    public int length() { return len; }

    /** The cached keys as a new tensor (B, H, T_seen, Dh), or null when empty. */
    public Tensor keys() { return len == 0 ? null : compact(kBuf); }

    /** The cached values as a new tensor (B, H, T_seen, Dh), or null when empty. */
    public Tensor values() { return len == 0 ? null : compact(vBuf); }

    private Tensor compact(float[] buf) {
        float[] out = new float[b * h * len * dh];
        for (int r = 0; r < b * h; r++) System.arraycopy(buf, r * cap * dh, out, r * len * dh, len * dh);
        return Tensor.of(out, b, h, len, dh);
    }

    /** Appends the keys and values of new tokens, both (B, H, T_new, Dh). */
    public void append(Tensor kNew, Tensor vNew) {
        Shape.requireRank(kNew, 4, "KVCache.append", "(B, H, T, Dh)");
        if (!kNew.sameShape(vNew))
            throw new IllegalArgumentException("KVCache.append: k " + Shape.str(kNew.shape()) + " and v "
                    + Shape.str(vNew.shape()) + " differ");
        int nb = kNew.size(0), nh = kNew.size(1), nt = kNew.size(2), nd = kNew.size(3);
        if (len == 0 && kBuf == null) {
            b = nb; h = nh; dh = nd;
        } else if (nb != b || nh != h || nd != dh) {
            throw new IllegalArgumentException("KVCache.append: cache holds (" + b + ", " + h + ", " + len + ", " + dh + "), new tokens are "
                    + Shape.str(kNew.shape()) + "; batch, heads and head_dim must match (use a separate cache per pass and layer)");
        }
        if (len + nt > cap) grow(Math.max(len + nt, Math.max(16, cap * 2)));
        float[] kd = kNew.data(), vd = vNew.data();
        for (int r = 0; r < b * h; r++) {
            System.arraycopy(kd, r * nt * dh, kBuf, (r * cap + len) * dh, nt * dh);
            System.arraycopy(vd, r * nt * dh, vBuf, (r * cap + len) * dh, nt * dh);
        }
        len += nt;
    }

    private void grow(int newCap) {
        float[] nk = new float[b * h * newCap * dh], nv = new float[b * h * newCap * dh];
        for (int r = 0; r < b * h && len > 0; r++) {
            System.arraycopy(kBuf, r * cap * dh, nk, r * newCap * dh, len * dh);
            System.arraycopy(vBuf, r * cap * dh, nv, r * newCap * dh, len * dh);
        }
        kBuf = nk;
        vBuf = nv;
        cap = newCap;
    }

    /**
     * Attention of the last {@code q.size(2)} cached tokens' queries q (B, H, Tq, Dh) over the
     * cache, without copying it: scores = scale q k^T, causal means query i (at position
     * len - Tq + i) sees keys 0..its own position; softmax; out = P v, (B, H, Tq, Dh). No
     * gradient (decoding runs under {@link Grad#noGrad()}); callers that need one use the
     * differentiable path with {@link #keys()} and {@link #values()}.
     */
    public Tensor attend(Tensor q, float scale, boolean causal) {
        Shape.requireRank(q, 4, "KVCache.attend", "(B, H, Tq, Dh)");
        int tq = q.size(2);
        if (q.size(0) != b || q.size(1) != h || q.size(3) != dh || tq > len)
            throw new IllegalArgumentException("KVCache.attend: queries " + Shape.str(q.shape()) + " do not fit a cache of ("
                    + b + ", " + h + ", " + len + ", " + dh + ")");
        float[] qd = q.data();
        float[] out = new float[qd.length];
        final float[] kb = kBuf, vb = vBuf;
        final int c = cap, n = len, d = dh;
        Parallel.forRange(b * h, 1, (lo, hi) -> {
            float[] p = new float[n];
            for (int r = lo; r < hi; r++) {
                int kBase = r * c * d;
                for (int i = 0; i < tq; i++) {
                    int qOff = (r * tq + i) * d;
                    int visible = causal ? n - tq + i + 1 : n;
                    float max = Float.NEGATIVE_INFINITY;
                    for (int j = 0; j < visible; j++) {
                        float s = scale * Vec.dot(qd, qOff, kb, kBase + j * d, d);
                        p[j] = s;
                        if (s > max) max = s;
                    }
                    double sum = 0;
                    for (int j = 0; j < visible; j++) {
                        float e = (float) Math.exp(p[j] - max);
                        p[j] = e;
                        sum += e;
                    }
                    float inv = (float) (1.0 / sum);
                    for (int j = 0; j < visible; j++) Vec.axpy(p[j] * inv, vb, kBase + j * d, out, qOff, d);
                }
            }
        });
        return Tensor.of(out, b, h, tq, d);
    }

    /** Empties the cache (keeps the buffers for reuse). */
    public void clear() { len = 0; }

    /** n empty caches, one per attention layer. */
    public static KVCache[] array(int n) {
        KVCache[] c = new KVCache[n];
        for (int i = 0; i < n; i++) c[i] = new KVCache();
        return c;
    }
}
