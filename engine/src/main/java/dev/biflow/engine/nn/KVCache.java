// Keys and values of the tokens seen so far, for incremental (token-by-token) causal attention.
package dev.biflow.engine.nn;

import dev.biflow.engine.Ops;
import dev.biflow.engine.Shape;
import dev.biflow.engine.Tensor;

/**
 * One attention layer's cache: k and v of shape (B, H, T_seen, Dh). {@link MultiHeadAttention}
 * appends the new tokens' k and v, then attends from the new queries only. Each layer needs its
 * own cache, and a guided sampler keeps separate caches for its conditional and unconditional
 * passes (ml-tarflow's {@code which_cache='cond'/'uncond'}). Appending copies the cache (one
 * concat); for TARFlow's sequence lengths that costs no more than the attention itself.
 */
public final class KVCache {
    private Tensor k, v;

    /** Tokens cached so far. */
    public int length() { return k == null ? 0 : k.size(2); }

    /** The cached keys (B, H, T_seen, Dh), or null when empty. */
    public Tensor keys() { return k; }

    /** The cached values (B, H, T_seen, Dh), or null when empty. */
    public Tensor values() { return v; }

    /** Appends the keys and values of new tokens, both (B, H, T_new, Dh). */
    public void append(Tensor kNew, Tensor vNew) {
        Shape.requireRank(kNew, 4, "KVCache.append", "(B, H, T, Dh)");
        if (!kNew.sameShape(vNew))
            throw new IllegalArgumentException("KVCache.append: k " + Shape.str(kNew.shape()) + " and v "
                    + Shape.str(vNew.shape()) + " differ");
        if (k == null) {
            k = kNew;
            v = vNew;
            return;
        }
        if (k.size(0) != kNew.size(0) || k.size(1) != kNew.size(1) || k.size(3) != kNew.size(3))
            throw new IllegalArgumentException("KVCache.append: cache holds " + Shape.str(k.shape()) + ", new tokens are "
                    + Shape.str(kNew.shape()) + "; batch, heads and head_dim must match (use a separate cache per pass and layer)");
        k = Ops.concat(2, k, kNew);
        v = Ops.concat(2, v, vNew);
    }

    /** Empties the cache. */
    public void clear() {
        k = null;
        v = null;
    }

    /** n empty caches, one per attention layer. */
    public static KVCache[] array(int n) {
        KVCache[] c = new KVCache[n];
        for (int i = 0; i < n; i++) c[i] = new KVCache();
        return c;
    }
}
