// The decode ops of an inference plan: MultiHeadAttention.lowerDecode against its KV-cached forward, bit for bit, and bad decode ops failing at build.
package dev.biflow.engine.plan;

import dev.biflow.engine.Arena;
import dev.biflow.engine.Grad;
import dev.biflow.engine.Ops;
import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.nn.KVCache;
import dev.biflow.engine.nn.MultiHeadAttention;
import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.quicktheories.QuickTheory.qt;
import static org.quicktheories.generators.SourceDSL.doubles;
import static org.quicktheories.generators.SourceDSL.integers;
import static org.quicktheories.generators.SourceDSL.longs;

class DecodePlanTest {

    /**
     * T decode steps of x + attention(x) (one token per example per step, a KV cache per layer), lowered with
     * DecodeAttention ops over cache regions, against forward(x_i, null, temp, cache) + the residual add: the same
     * bits, with the temperature baked in or read from the arena, both scalings, 1 to 3 heads.
     */
    @Test
    void loweredDecodeStepsGiveTheBitsOfTheCachedForward() {
        qt().withExamples(30).forAll(integers().between(1, 3), integers().between(1, 9), doubles().between(0.3, 3), longs().all())
                .checkAssert((b, t, temp, seed) -> {
                    Rng rng = new Rng(seed);
                    int heads = 1 + (int) ((seed & 0xff) % 3), dh = 2 + (int) ((seed >>> 8) & 7), d = heads * dh;
                    boolean fused = ((seed >>> 12) & 1) != 0, fromArena = ((seed >>> 13) & 1) != 0;
                    MultiHeadAttention att = new MultiHeadAttention(d, heads, true, true, rng);
                    if (fused) att.scaling(MultiHeadAttention.Scaling.FUSED);
                    float tp = temp.floatValue();
                    Tensor x = Tensor.randn(rng, b, t, d);
                    float[] want = new float[b * t * d];
                    try (var ng = Grad.noGrad()) {
                        KVCache cache = new KVCache();
                        for (int i = 0; i < t; i++) {
                            Tensor xi = Ops.narrow(x, 1, i, 1); // (B, 1, D)
                            float[] yi = Ops.add(xi, att.forward(xi, null, tp, cache)).data();
                            for (int e = 0; e < b; e++) System.arraycopy(yi, e * d, want, (e * t + i) * d, d);
                        }
                    }
                    PlanBuilder p = new PlanBuilder(b);
                    Region rx = p.alloc(b * t, d), ry = p.alloc(b * t, d), scale = p.alloc(1, 1);
                    Region keys = p.alloc(b * heads * dh, t), values = p.alloc(b * heads * t, dh);
                    for (int i = 0; i < t; i++) {
                        Region xi = new Region(0, rx.off() + i * d, b, d, t * d), yi = new Region(0, ry.off() + i * d, b, d, t * d);
                        att.lowerDecode(p, xi, yi, PlanOp.Epilogue.add(xi), keys, values, i, fromArena ? 1f : tp, fromArena ? scale : null);
                    }
                    Plan plan = p.build();
                    float[] got = new float[b * t * d];
                    try (Arena scope = Arena.open()) {
                        float[] a = Arena.floats(plan.size());
                        System.arraycopy(x.data(), 0, a, rx.off(), b * t * d);
                        a[scale.off()] = att.decodeScale(tp);
                        CpuExecutor.run(plan, a);
                        System.arraycopy(a, ry.off(), got, 0, got.length);
                    }
                    assertArrayEquals(want, got, "b " + b + ", T " + t + ", heads " + heads + ", dh " + dh + ", fused " + fused + ", temp " + tp
                            + (fromArena ? " (read from the arena)" : ""));
                });
    }

    @Test
    void badDecodeOpsFailAtBuildNamingTheProblem() {
        Tensor table = Tensor.zeros(4, 6);
        PlanBuilder p = new PlanBuilder(2);
        Region qkv = p.alloc(2, 18), keys = p.alloc(2 * 2 * 3, 4), values = p.alloc(2 * 2 * 4, 3), out = p.alloc(2, 6), h = p.alloc(2, 6),
                prm = p.alloc(2, 12), one = p.alloc(1, 1);
        p.add(new PlanOp.DecodeAttention(qkv, keys, values, out, 2, 3, 0.5f, 1f, one)); // a good one
        assertMessage(() -> p.add(new PlanOp.DecodeAttention(qkv, keys, values, out, 2, 4, 0.5f, 1f, null)), "step 4");
        assertMessage(() -> p.add(new PlanOp.DecodeAttention(qkv, keys, values, out, 4, 0, 0.5f, 1f, null)), "3 x heads");
        assertMessage(() -> p.add(new PlanOp.DecodeAttention(qkv, keys, values, keys, 2, 0, 0.5f, 1f, null)), "out");
        assertMessage(() -> p.add(new PlanOp.DecodeAttention(qkv, keys, values, out, 2, 0, 0.5f, 1f, h)), "scaleAt");
        p.add(new PlanOp.AddRow(h, table, 3, h));
        assertMessage(() -> p.add(new PlanOp.AddRow(h, table, 4, h)), "row 4");
        p.add(new PlanOp.CouplingStep(prm, null, null, PlanOp.Bound.SOFT, 2f, h));
        assertMessage(() -> p.add(new PlanOp.CouplingStep(prm, prm, null, PlanOp.Bound.NONE, 0f, h)), "gain");
        assertMessage(() -> p.add(new PlanOp.CouplingStep(prm, null, null, PlanOp.Bound.HARD, 0f, h)), "> 0");
        assertMessage(() -> p.add(new PlanOp.CouplingStep(h, null, null, PlanOp.Bound.NONE, 0f, prm)), "params");
        assertEquals(3, p.build().ops().size());
    }

    /** The bounds round as Ops.clamp and Ops.softClip do (the coupling step's bits depend on it). */
    @Test
    void boundsRoundAsTheTensorOps() {
        float[] v = {-7.5f, -1.25f, -0f, 0.3f, 2.9f, 11f};
        Tensor t = Tensor.of(v.clone(), v.length);
        float[] hard = Ops.clamp(t, -2.5f, 2.5f).data(), soft = Ops.softClip(t, 2.5f).data();
        for (int i = 0; i < v.length; i++) {
            assertEquals(Float.floatToIntBits(hard[i]), Float.floatToIntBits(PlanOp.Bound.HARD.apply(v[i], 2.5f)), "hard " + v[i]);
            assertEquals(Float.floatToIntBits(soft[i]), Float.floatToIntBits(PlanOp.Bound.SOFT.apply(v[i], 2.5f)), "soft " + v[i]);
            assertEquals(Float.floatToIntBits(v[i]), Float.floatToIntBits(PlanOp.Bound.NONE.apply(v[i], 2.5f)), "none " + v[i]);
        }
    }

    static void assertMessage(org.junit.jupiter.api.function.Executable call, String fragment) {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, call);
        assertTrue(e.getMessage().contains(fragment), e.getMessage());
    }
}
