// Keys and values of the tokens seen so far, for incremental (token-by-token) causal attention.
package dev.biflow.engine.nn;

import dev.biflow.engine.Grad;
import dev.biflow.engine.Shape;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.kernels.DecodeAttention;
import dev.biflow.engine.kernels.Parallel;

/**
 * One attention layer's cache: k and v of (B, H, T_seen, Dh), stored in buffers that grow by
 * doubling (or are sized once by {@link #reserve}), so appending a token costs O(B H Dh) instead of
 * re-copying the whole cache (which made exact-inverse sampling quadratic in copying at 196 tokens).
 * Keys are stored transposed, (B, H, Dh, cap): the decode kernel then scores a query against L keys
 * at once with Dh vector FMAs and no horizontal sums (a dot product per key, at Dh = 32, was half of
 * the exact inverse's time). {@link
 * MultiHeadAttention} appends the new tokens' k and v, then attends from the new queries only
 * through {@link #attend}, a decode kernel that reads the buffers in place. Each layer needs its
 * own cache, and a guided sampler keeps separate caches for its conditional and unconditional
 * passes (ml-tarflow's {@code which_cache='cond'/'uncond'}). A cache made inside an {@link dev.biflow.engine.Arena}
 * scope takes its buffers from that scope (even when it first grows inside a nested one) and must not be used
 * after the scope closes.
 */
public final class KVCache {
    private float[] kBuf, vBuf; // keys (B, H, Dh, cap), values (B, H, cap, Dh)
    /** The Arena scope open where this cache was made (null: none); its buffers live as long as that scope. */
    private final dev.biflow.engine.Arena owner = dev.biflow.engine.Arena.current();
    private int b, h, dh, cap, len;

    /** Tokens cached so far. */
    public int length() { return len; }

    /** The cached keys as a new tensor (B, H, T_seen, Dh), or null when empty. */
    public Tensor keys() {
        if (len == 0) return null;
        float[] out = new float[b * h * len * dh];
        for (int r = 0; r < b * h; r++)
            for (int t = 0; t < len; t++)
                for (int d = 0; d < dh; d++) out[(r * len + t) * dh + d] = kBuf[(r * dh + d) * cap + t];
        return Tensor.of(out, b, h, len, dh);
    }

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
        if (len + nt > cap) grow(Math.max(len + nt, Math.max(Math.max(16, reserved), cap * 2)));
        float[] kd = kNew.data(), vd = vNew.data();
        for (int r = 0; r < b * h; r++) {
            for (int t = 0; t < nt; t++)
                for (int d = 0; d < dh; d++) kBuf[(r * dh + d) * cap + len + t] = kd[(r * nt + t) * dh + d];
            System.arraycopy(vd, r * nt * dh, vBuf, (r * cap + len) * dh, nt * dh);
        }
        len += nt;
    }

    /** Sizes the buffers for {@code tokens} tokens at the first append: a decode of known length never regrows. */
    public KVCache reserve(int tokens) {
        if (tokens < 0) throw new IllegalArgumentException("KVCache.reserve: " + tokens + " tokens");
        reserved = tokens;
        return this;
    }

    private int reserved;

    private void grow(int newCap) {
        // from the Arena when a scope is open (a sampler's caches then reuse the last sample's arrays: fresh arrays of
        // tens of MB per call made the exact inverse page-fault its way through a resizing heap, 2-3x slower)
        float[] nk = owner == null ? new float[b * h * newCap * dh] : owner.take(b * h * newCap * dh),
                nv = owner == null ? new float[b * h * newCap * dh] : owner.take(b * h * newCap * dh);
        for (int r = 0; r < b * h && len > 0; r++) {
            for (int d = 0; d < dh; d++) System.arraycopy(kBuf, (r * dh + d) * cap, nk, (r * dh + d) * newCap, len);
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
        float[] out = dev.biflow.engine.Arena.floats(qd.length);
        final float[] kb = kBuf, vb = vBuf;
        final int c = cap, n = len, d = dh;
        Parallel.forRange(b * h, 1, (lo, hi) -> {
            float[] p = new float[n];
            for (int r = lo; r < hi; r++) {
                int kBase = r * d * c, vBase = r * c * d;
                for (int i = 0; i < tq; i++) {
                    int qOff = (r * tq + i) * d;
                    int visible = causal ? n - tq + i + 1 : n;
                    DecodeAttention.row(qd, qOff, kb, kBase, c, vb, vBase, d, visible, scale, p, out, qOff);
                }
            }
        });
        return Tensor.of(out, b, h, tq, d);
    }

    /** Empties the cache (keeps the buffers for reuse). */
    public void clear() { len = 0; }

    /** n empty caches, one per attention layer. */
    public static KVCache[] array(int n) { return array(n, 0); }

    /** n empty caches, one per attention layer, each sized for {@code tokens} tokens (see {@link #reserve}). */
    public static KVCache[] array(int n, int tokens) {
        KVCache[] c = new KVCache[n];
        for (int i = 0; i < n; i++) c[i] = new KVCache().reserve(tokens);
        return c;
    }
}
