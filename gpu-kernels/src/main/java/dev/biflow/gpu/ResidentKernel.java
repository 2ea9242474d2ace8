// One Aparapi kernel class holding a whole model pass's buffers (weights, activations, I/O staging) so consecutive ops share them on the device.
package dev.biflow.gpu;

import com.aparapi.Kernel;

/**
 * Every op of a {@link ResidentStack} pass, selected by {@link #mode}, over three arenas:
 * <ul>
 *   <li>{@link #w}: all weights and biases of the stack, packed once at build (uploaded once);</li>
 *   <li>{@link #act}: all activations of a pass; written and read only by the kernel, never copied;</li>
 *   <li>{@link #io}: the staging array a pass copies in (input) and out (output), the only
 *       per-pass traffic.</li>
 * </ul>
 * Why one class: Aparapi keeps device buffers per kernel instance, keyed by the Java array in each
 * field, so two kernel classes cannot hand each other a device buffer. With one instance and a
 * mode switch, every launch sees the same three buffers, and nothing crosses the bus between ops.
 *
 * <p>Offsets ({@link #src}, {@link #dst}, {@link #wOff}, {@link #bOff}) are in floats into the
 * arenas; all tensors are row-major. Modes (one launch each):
 * <ul>
 *   <li>COPY_IN: act[dst + g] = io[src + g], g &lt; n;  COPY_OUT: io[dst + g] = act[src + g], g &lt; n
 *       (src / dst index io for the io side, so one pass can copy several inputs in).</li>
 *   <li>LINEAR: Y (m, n) = X (m, k) W^T + bias, X at act[src], Y at act[dst], W (n, k) at w[wOff]
 *       (PyTorch's (out, in) layout), bias (n) at w[bOff] if hasB. 2-D range of TS x TS groups
 *       (columns of Y, rows of Y), tiles of X and W in local memory as in {@link GemmKernel}.</li>
 *   <li>LAYERNORM: rows of length d from act[src] to act[dst] (must not overlap), two-pass biased
 *       variance as the CPU kernel; weight at w[wOff] if hasW, bias at w[bOff] if hasB. One item per row.</li>
 *   <li>GELU: act[dst + g] = gelu(act[dst + g]) in place, exact erf form with the engine's
 *       erf approximation (Abramowitz-Stegun 7.1.26, {@code kernels.Gelu}).</li>
 *   <li>ADD: act[dst + g] += act[src + g] (the residual), g &lt; n.</li>
 *   <li>SILU: act[dst + g] = silu(act[dst + g]) in place, split by sign as the engine's sigmoid.</li>
 *   <li>The per-sample modes, over samples of {@link #per} floats (rows of d), where sample b has
 *       vectors of d floats at act[vOff + b vStride] and act[v2Off + b vStride] (adaLN's chunks
 *       of a (B, 6D) Linear output: shift, scale, gate):
 *       MODULATE: act[dst + g] = x + x * scale[b] + shift[b] with x = act[src + g] (DiT's
 *       modulate; shift at vOff, scale at v2Off; in place allowed);
 *       GATED_ADD: act[dst + g] += gate[b] * act[src + g] (gate at vOff);
 *       ADD_TABLE: act[dst + g] += w[wOff + g mod per] (a (T, D) table added to every sample:
 *       the position embedding; or one row of it, per = D: a decode step's).</li>
 *   <li>ATTENTION: softmax(scale q k^T) v per (batch, head), reading q, k, v straight out of the
 *       fused qkv Linear output at act[src], (B, T, 3 D) with D = heads * dh and columns
 *       [q heads | k heads | v heads] (engine's MultiHeadAttention: reshape (B, T, 3H, Dh), chunk
 *       3), and writing the heads merged back, (B, T, D) at act[dst]: no transpose op needed. One
 *       item per (b*H + h, query i), two passes over the keys (max, then exp-weighted sum), no score
 *       matrix; causal keeps keys j &lt;= i.</li>
 *   <li>LINEAR's strides and epilogue: X rows ldx apart and Y rows ldy apart (k and n normally; a decode
 *       step reads one token of every sample out of x (B, T, td)), GELU when gel, Y = R + (G *) Y when
 *       accum (the gated residual).</li>
 *   <li>The exact-inverse plan's ops (TarFlow.lowerReverse): DECODE (PlanOp.DecodeAttention: one item per
 *       (sample, head) appends its k and v to the cache and attends keys 0..qi), COUPLE_STEP
 *       (PlanOp.CouplingStep: bound, CFG combine, x = x exp(a) + b of one token); see each method.</li>
 * </ul>
 *
 * <p>Aparapi rules (README): primitive fields and arrays only, float literals only, flat
 * {@code if (mode == X && g < n)} statements (nested else-if chains broke the decompiler
 * elsewhere), no Float.NEGATIVE_INFINITY, compiled with -g. Fields are set by {@link ResidentStack}
 * under its lock.
 */
final class ResidentKernel extends Kernel {
    static final int COPY_IN = 0, COPY_OUT = 1, LINEAR = 2, LAYERNORM = 3, GELU = 4, ADD = 5, ATTENTION = 6,
            SILU = 7, MODULATE = 8, GATED_ADD = 9, ADD_TABLE = 10, DECODE = 12, COUPLE_STEP = 13, GATHER_ROWS = 14;
    /** COUPLE_STEP's bound on (a, b), as PlanOp.Bound (ordinal): none, clamp to [-c, c], c tanh(v / c). */
    static final int CLIP_NONE = 0, CLIP_HARD = 1, CLIP_SOFT = 2;
    /** Tile edge of LINEAR: 16 x 16 = 256 items per group, every OpenCL device's minimum. */
    static final int TS = 16;
    /** Stand-in for -infinity (javac inlines Float.NEGATIVE_INFINITY as a literal OpenCL C cannot parse). */
    static final float NEG_BIG = -3.0e38f;

    // Arena sizes are fixed at build: a new array in a field would make Aparapi allocate (and copy) a new device buffer.
    float[] w = new float[1];   // (all weights), packed by ResidentStack
    float[] act = new float[1]; // (all activations of one pass)
    float[] io = new float[1];  // (B*T*max(Din, Dout)) staging

    int mode, n, m, k, src, dst, wOff, bOff, hasW, hasB, rows, d, slices, heads, t, dh, causal;
    int per, vOff, v2Off, vStride; // the per-sample modes: floats per sample, the two vectors' offsets, their stride per sample
    int ldx, ldy, accum, gel;       // LINEAR: X's and Y's row strides; the epilogue: Y = residual + (gate *) Y, GELU
    int rsOff, ldr, gated, gtOff, ldg, gRows; // the residual (rows ldr apart) and the gate (one row per gRows rows, ldg apart)
    int qi, kOff, vlOff, ldk, scaleOff; // DECODE: the step (query index), keys (transposed, rows ldk apart), values, the scale's float (< 0: scale)
    int guided, clipMode;               // COUPLE_STEP: CFG on, the bound
    float eps, scale, qkScale, clip;

    @Local final float[] tileX = new float[TS * TS]; // [row][kk]
    @Local final float[] tileW = new float[TS * TS]; // [kk][col]: transposed on load so the inner loop reads rows

    @Override
    public void run() {
        int g = getGlobalId(0);
        // LINEAR has barriers: every item of a group must reach them, so its bounds checks are inside.
        if (mode == LINEAR) linear();
        if (mode == COPY_IN && g < n) act[dst + g] = io[src + g];
        if (mode == COPY_OUT && g < n) io[dst + g] = act[src + g];
        if (mode == ADD && g < n) act[dst + g] = act[dst + g] + act[src + g];
        if (mode == GELU && g < n) act[dst + g] = gelu(act[dst + g]);
        if (mode == LAYERNORM && g < rows) layerNormRow(g);
        if (mode == ATTENTION && g < slices * t) attend(g);
        if (mode == SILU && g < n) act[dst + g] = silu(act[dst + g]);
        if (mode == MODULATE && g < n) modulate(g);
        if (mode == GATED_ADD && g < n) gatedAdd(g);
        if (mode == GATHER_ROWS && g < n) gatherRows(g);
        if (mode == ADD_TABLE && g < n) addTable(g);
        if (mode == DECODE && g < slices) decode(g);
        if (mode == COUPLE_STEP && g < n) coupleStep(g);
    }

    /** w's table (per floats) added to every sample (a position table, or one row of it: a decode step's pos_embed row). */
    private void addTable(int g) {
        act[dst + g] = act[dst + g] + w[wOff + g - (g / per) * per];
    }

    /**
     * The plan's DecodeAttention for slice g = (sample e, head h): q and k of the step's fused projection (samples, 3
     * heads dh) at act[src] multiplied by qkScale, k stored at column qi of the transposed keys (row (e heads + h) dh + c
     * at act[kOff], ldk apart), v at row qi of the values ((e heads + h) t + j at act[vlOff], rows of dh), then query qi
     * attends the keys 0..qi with the logit scale (or act[scaleOff] when scaleOff &gt;= 0), heads merged into
     * (samples, heads dh) at act[dst]. An item touches only its own head's columns and cache rows.
     */
    private void decode(int g) {
        int e = g / heads, h = g - (g / heads) * heads;
        int dm = heads * dh;
        int qo = src + e * 3 * dm + h * dh;
        int ko = qo + dm;
        int vo = ko + dm;
        int kc = kOff + (e * heads + h) * dh * ldk;
        int vc = vlOff + (e * heads + h) * t * dh;
        for (int c = 0; c < dh; c++) {
            act[qo + c] = act[qo + c] * qkScale;
            act[kc + c * ldk + qi] = act[ko + c] * qkScale;
            act[vc + qi * dh + c] = act[vo + c];
        }
        float sc = scale;
        if (scaleOff >= 0) sc = act[scaleOff];
        // keys transposed (element c of key j at kc + c ldk + j), values in rows of dh
        attendRow(qo, kc, 1, ldk, vc, dh, dst + e * dm + h * dh, qi + 1, sc);
    }

    /** PlanOp.Bound: none, clamp, or c tanh(v / c) (Ops.softClip: v * (1 / c), tanh, * c), tanh through exp of a non-positive argument. */
    private float bound(float v) {
        float y = v;
        if (clipMode == CLIP_HARD) y = min(clip, max(-clip, v));
        if (clipMode == CLIP_SOFT) {
            float u = v * (1f / clip);
            float e = exp(-2f * abs(u));
            float th = (1f - e) / (1f + e);
            if (u < 0f) th = -th;
            y = clip * th;
        }
        return y;
    }

    /**
     * The plan's CouplingStep for sample e &lt; n / d and feature c &lt; d: (a, b) = bound(params row e) (rows of 2 d at
     * act[src]: [a | b]); with CFG (guided) a = a + gi (a - a_u) from the unconditional params (rows of 2 d at
     * act[v2Off]), gi = act[vOff]; then x = x exp(a) + b in place, x's rows ldy apart at act[dst].
     */
    private void coupleStep(int g) {
        int e = g / d, c = g - (g / d) * d;
        int po = src + e * 2 * d + c;
        float a = bound(act[po]);
        float b = bound(act[po + d]);
        if (guided == 1) {
            float gi = act[vOff];
            int uo = v2Off + e * 2 * d + c;
            float ua = bound(act[uo]);
            float ub = bound(act[uo + d]);
            a = a + gi * (a - ua);
            b = b + gi * (b - ub);
        }
        int xo = dst + e * ldy + c;
        act[xo] = act[xo] * exp(a) + b;
    }

    /** x * sigmoid(x), the sigmoid split by sign so exp never overflows (engine's Ops.sigmoid, in float). */
    private float silu(float x) {
        float y = 0f;
        if (x >= 0f) y = x / (1f + exp(-x));
        if (x < 0f) {
            float e = exp(x);
            y = x * e / (1f + e);
        }
        return y;
    }

    /** DiT's modulate(h, shift, scale) = h + h * scale + shift, in that order (BiFlowModel.modulate). */
    private void modulate(int g) {
        int b = g / per, col = g - (g / d) * d;
        float x = act[src + g];
        act[dst + g] = x + x * act[v2Off + b * vStride + col] + act[vOff + b * vStride + col];
    }

    /** Row i of (n / d, d) at act[dst] = row act[src + i] (an index stored as a float) of the (V, d) table at w[wOff]. */
    private void gatherRows(int g) {
        int i = g / d, col = g - i * d;
        int id = (int) act[src + i];
        act[dst + g] = w[wOff + id * d + col];
    }

    /** h + gate * y (BiFlowModel.Layer's residual: Ops.add(x, Ops.mul(gate, y))). */
    private void gatedAdd(int g) {
        int b = g / per, col = g - (g / d) * d;
        act[dst + g] = act[dst + g] + act[vOff + b * vStride + col] * act[src + g];
    }

    private void linear() {
        int col = getGlobalId(0), row = getGlobalId(1);
        int lc = getLocalId(0), lr = getLocalId(1);
        int colBase = col - lc; // first output column of this group
        int wr = colBase + lr;  // the weight row (output feature) this item loads: W reads run along k, coalesced
        float acc = 0f;
        for (int t0 = 0; t0 < k; t0 += TS) {
            int kk = t0 + lc;
            float xv = 0f;
            if (row < m && kk < k) xv = act[src + row * ldx + kk];
            tileX[lr * TS + lc] = xv;
            float wv = 0f;
            if (wr < n && kk < k) wv = w[wOff + wr * k + kk];
            tileW[lc * TS + lr] = wv; // tileW[kk][j] = W[colBase + j][t0 + kk]
            localBarrier();
            for (int p = 0; p < TS; p++) acc += tileX[lr * TS + p] * tileW[p * TS + lc];
            localBarrier();
        }
        if (row < m && col < n) {
            float y = acc;
            if (hasB == 1) y = y + w[bOff + col];
            if (gel == 1) y = gelu(y);
            int yo = dst + row * ldy + col;
            if (accum == 1) { // the (gated) residual r + g * f(x), in that order as Ops.add(r, Ops.mul(g, f))
                if (gated == 1) y = act[gtOff + (row / gRows) * ldg + col] * y;
                y = act[rsOff + row * ldr + col] + y;
            }
            act[yo] = y;
        }
    }

    private void layerNormRow(int r) {
        int xo = src + r * d, yo = dst + r * d;
        float s = 0f;
        for (int i = 0; i < d; i++) s += act[xo + i];
        float mu = s / d;
        float ss = 0f;
        for (int i = 0; i < d; i++) {
            float c = act[xo + i] - mu;
            ss += c * c;
        }
        float rs = 1f / sqrt(ss / d + eps);
        for (int i = 0; i < d; i++) {
            float y = (act[xo + i] - mu) * rs;
            if (hasW == 1) y = y * w[wOff + i];
            if (hasB == 1) y = y + w[bOff + i];
            act[yo + i] = y;
        }
    }

    /** 0.5 x (1 + erf(x / sqrt 2)), erf as engine's kernels.Gelu.erf (A-S 7.1.26, |error| < 1.5e-7). */
    private float gelu(float x) {
        float u = x * 0.70710678f;
        float a = abs(u);
        float q = 1f / (1f + 0.3275911f * a);
        float poly = ((((1.061405429f * q - 1.453152027f) * q + 1.421413741f) * q - 0.284496736f) * q + 0.254829592f) * q;
        float e = 1f - poly * exp(-a * a);
        if (u < 0f) e = -e;
        return 0.5f * x * (1f + e);
    }

    private void attend(int g) {
        int s = g / t, i = g - (g / t) * t;
        int b = s / heads, h = s - (s / heads) * heads;
        int dm = heads * dh, rs = 3 * dm;        // model width; qkv row stride
        int qo = src + (b * t + i) * rs + h * dh; // q of (b, h, i)
        int ko = src + b * t * rs + dm + h * dh;  // k of (b, h, key 0); key j at ko + j * rs
        int vo = ko + dm;                         // v likewise
        int oo = dst + (b * t + i) * dm + h * dh; // merged output (b, i, h*dh ...)
        int lim = t;
        if (causal == 1) lim = i + 1;
        attendRow(qo, ko, rs, 1, vo, rs, oo, lim, scale);
    }

    /**
     * One query's attention over keys 0 .. lim-1 (lim >= 1, no mask: every row sees a key, so no "seen
     * any" flag is needed): q at act[qo], element c of key j at act[ko + j kj + c kc], value j at
     * act[vo + j vj], output at act[oo .. oo + dh). Two passes over the keys (max, then exp-sum and P V): no
     * score row stored. The inner loop of ATTENTION (keys in the qkv rows) and of DECODE (keys transposed in
     * the cache, as the CPU decode kernel reads them).
     */
    private void attendRow(int qo, int ko, int kj, int kc, int vo, int vj, int oo, int lim, float sc) {
        float mx = NEG_BIG;
        for (int j = 0; j < lim; j++) {
            float e = 0f;
            for (int c = 0; c < dh; c++) e += act[qo + c] * act[ko + j * kj + c * kc];
            mx = max(mx, e * sc);
        }
        for (int c = 0; c < dh; c++) act[oo + c] = 0f;
        float sum = 0f;
        for (int j = 0; j < lim; j++) {
            float e = 0f;
            for (int c = 0; c < dh; c++) e += act[qo + c] * act[ko + j * kj + c * kc];
            float p = exp(e * sc - mx);
            sum += p;
            for (int c = 0; c < dh; c++) act[oo + c] += p * act[vo + j * vj + c];
        }
        float inv = 1f / sum;
        for (int c = 0; c < dh; c++) act[oo + c] = act[oo + c] * inv;
    }
}
