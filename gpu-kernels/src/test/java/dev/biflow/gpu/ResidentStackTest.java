// ResidentStack against the same engine modules on the CPU, with exact launch/copy counts per pass.
package dev.biflow.gpu;

import dev.biflow.engine.Grad;
import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.nn.LayerNorm;
import dev.biflow.engine.nn.Linear;
import dev.biflow.engine.nn.MLP;
import dev.biflow.engine.nn.Module;
import dev.biflow.engine.nn.MultiHeadAttention;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import java.util.ArrayList;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Tolerance: |gpu - cpu| <= 1e-4 + 1e-4 |cpu| per output element. Both sides are float32; they
 * differ in summation order (tiled vs blocked GEMM), exp (device vs the engine's polynomial) and
 * where the attention scale is applied (MultiHeadAttention's default SPLIT_QK scales q and k by
 * Dh^-1/4 each; the kernel scales the logits by Dh^-1/2), so a few float32 ulps per op, compounded
 * through 8 residual layers. Each test prints its maximum error.
 */
class ResidentStackTest {

    /** Layers in order: Linear, LayerNorm, or a block (MultiHeadAttention / MLP, residual included). */
    private record Model(List<Module> layers) {
        ResidentStack resident(OpenClBackend be, int batch, int tokens) {
            ResidentStack.Builder b = ResidentStack.builder(be, batch, tokens);
            for (Module m : layers) {
                if (m instanceof Linear l) b.linear(l);
                else if (m instanceof LayerNorm n) b.layerNorm(n);
                else if (m instanceof MultiHeadAttention a) b.attentionBlock(a);
                else b.mlpBlock((MLP) m);
            }
            return b.build();
        }

        /** The same pass with the engine's modules on the CPU backend, as BenchCommand.timeBidir runs it. */
        Tensor cpu(Tensor x) {
            try (var ng = Grad.noGrad()) {
                Tensor h = x;
                for (Module m : layers) {
                    if (m instanceof MultiHeadAttention || m instanceof MLP) h = h.add(m.forward(h));
                    else h = m.forward(h);
                }
                return h;
            }
        }

        long parameterFloats() {
            long n = 0;
            for (Module m : layers) for (Tensor p : m.parameters()) n += p.numel();
            return n;
        }
    }

    /** BenchCommand.timeBidir's model at a smaller width: Linear in, 8 x (h + MHA(h), h + MLP(h)), Linear out. */
    private static Model bidir8(int din, int dim, int dout, long seed) {
        Rng rng = new Rng(seed);
        List<Module> l = new ArrayList<>();
        l.add(new Linear(din, dim, true, rng));
        for (int i = 0; i < 8; i++) {
            l.add(MultiHeadAttention.withHeadDim(dim, 32, false, true, rng));
            l.add(new MLP(dim, 4, true, rng));
        }
        l.add(new Linear(dim, dout, true, rng));
        return new Model(l);
    }

    private static OpenClBackend opencl() { return (OpenClBackend) BackendConformanceTest.backend("opencl"); }

    /** Max |a - b|; fails if any element is beyond 1e-4 + 1e-4 |b|. */
    private static double assertClose(float[] gpu, float[] cpu, String what) {
        assertEquals(cpu.length, gpu.length, what + ": length");
        double max = 0;
        for (int i = 0; i < cpu.length; i++) {
            double e = Math.abs(gpu[i] - cpu[i]);
            max = Math.max(max, e);
            if (!(e <= 1e-4 + 1e-4 * Math.abs(cpu[i])))
                throw new AssertionError(what + ": element " + i + " is " + gpu[i] + ", CPU " + cpu[i] + " (|diff| " + e + ")");
        }
        System.out.printf("[resident] %s: max |gpu - cpu| = %.3g%n", what, max);
        return max;
    }

    @ParameterizedTest(name = "B={0} T={1}")
    @CsvSource({"2, 16", "3, 49"})
    void bidirectionalEightLayerStackMatchesTheCpuModules(int batch, int tokens) {
        OpenClBackend be = opencl();
        Model model = bidir8(16, 64, 16, 4);
        Tensor x = Tensor.randn(new Rng(7), batch, tokens, 16);
        try (ResidentStack s = model.resident(be, batch, tokens)) {
            assertClose(s.run(x.data()), model.cpu(x).data(), "bidir 8-layer B" + batch + " T" + tokens);
            // a second pass reuses the device's weights and arena (a stale or clobbered buffer would show here)
            Tensor x2 = Tensor.randn(new Rng(8), batch, tokens, 16);
            assertClose(s.forward(x2).data(), model.cpu(x2).data(), "bidir 8-layer, second input");
        }
    }

    @Test
    void causalAttentionBlockMatchesTheCpuModule() {
        OpenClBackend be = opencl();
        Rng rng = new Rng(5);
        // causal, with and without pre-norm, FUSED and SPLIT_QK scaling, a head size that is not a power of two
        Model model = new Model(List.of(
                new Linear(8, 48, true, rng),
                new MultiHeadAttention(48, 3, true, true, rng),
                new MultiHeadAttention(48, 2, true, false, rng).scaling(MultiHeadAttention.Scaling.FUSED),
                new MLP(48, 4, true, rng)));
        Tensor x = Tensor.randn(new Rng(6), 2, 33, 8);
        try (ResidentStack s = model.resident(be, 2, 33)) {
            float[] out = s.run(x.data());
            assertClose(out, model.cpu(x).data(), "causal block T33");
            // causality: changing the last token leaves every earlier token's output unchanged
            float[] x2 = x.data().clone();
            for (int b = 0; b < 2; b++) for (int c = 0; c < 8; c++) x2[(b * 33 + 32) * 8 + c] += 1f;
            float[] out2 = s.run(x2);
            for (int b = 0; b < 2; b++)
                for (int i = 0; i < 33 * 48; i++) {
                    int idx = b * 33 * 48 + i;
                    if (i < 32 * 48) assertEquals(out[idx], out2[idx], "token " + i / 48 + " of sample " + b + " saw a later token");
                }
            boolean lastChanged = false;
            for (int c = 0; c < 48; c++) lastChanged |= out[32 * 48 + c] != out2[32 * 48 + c];
            assertTrue(lastChanged, "the changed token's own output must change");
        }
    }

    @Test
    void onePutOneGetPerPassAndWeightsOnlyAtBuild() {
        OpenClBackend be = opencl();
        int batch = 2, tokens = 16, din = 16, dout = 16;
        Model model = bidir8(din, 64, dout, 9);
        synchronized (be) { // the backend's counters too: no other test may use it meanwhile
            long bl = be.transfers().launches(), bp = be.transfers().puts(), bg = be.transfers().gets();
            try (ResidentStack s = model.resident(be, batch, tokens)) {
                Transfers t = s.transfers();
                assertEquals(model.parameterFloats(), s.weightFloats(), "every parameter packed once");
                assertEquals(1, t.puts(), "build: the weights, once");
                assertEquals(4 * s.weightFloats(), t.bytesToDevice());
                assertEquals(0, t.gets());
                assertEquals(1, t.launches(), "build: one empty launch (device check)");
                // COPY_IN, Linear in, 8 x (LN, qkv, attention, proj, add; LN, fc1, GELU, fc2, add), Linear out, COPY_OUT
                int perPass = 1 + 1 + 8 * (5 + 5) + 1 + 1;
                assertEquals(perPass, s.launchesPerRun());
                long ioBytes = 4L * batch * tokens * Math.max(din, dout);
                Tensor x = Tensor.randn(new Rng(1), batch, tokens, din);
                float[] first = null;
                for (int pass = 1; pass <= 2; pass++) {
                    long l = t.launches(), p = t.puts(), g = t.gets(), up = t.bytesToDevice(), down = t.bytesFromDevice();
                    float[] y = s.run(x.data());
                    assertEquals(1, t.puts() - p, "pass " + pass + ": one put (the input)");
                    assertEquals(ioBytes, t.bytesToDevice() - up, "pass " + pass + ": only io goes up, no weights");
                    assertEquals(1, t.gets() - g, "pass " + pass + ": one get (the output)");
                    assertEquals(ioBytes, t.bytesFromDevice() - down);
                    assertEquals(perPass, t.launches() - l, "pass " + pass + ": launches");
                    if (first == null) first = y;
                    else assertArrayEquals(first, y, "same input, same output");
                }
                System.out.printf("[resident] bidir 8-layer B%d T%d width 64: build + 2 passes = %s%n", batch, tokens, t);
                assertEquals(t.launches(), be.transfers().launches() - bl, "the backend's counters include the stack's");
                assertEquals(t.puts(), be.transfers().puts() - bp);
                assertEquals(t.gets(), be.transfers().gets() - bg);

                // weights are a snapshot: a host change is not seen until refreshWeights (one put)
                Linear out = (Linear) model.layers().get(model.layers().size() - 1);
                out.bias.data()[0] += 1f;
                assertArrayEquals(first, s.run(x.data()), "host weight change not seen before refreshWeights");
                long p = t.puts(), up = t.bytesToDevice();
                s.refreshWeights();
                assertEquals(1, t.puts() - p);
                assertEquals(4 * s.weightFloats(), t.bytesToDevice() - up);
                float[] y = s.run(x.data());
                assertClose(y, model.cpu(x).data(), "after refreshWeights");
                assertEquals(first[0] + 1f, y[0], 1e-5f, "the new bias is used");
            }
        }
    }

    @ParameterizedTest(name = "T={0}")
    @CsvSource({"49", "65"})
    void tokensNotAMultipleOfTheWorkGroupAndOddWidths(int tokens) {
        OpenClBackend be = opencl();
        Rng rng = new Rng(tokens);
        // odd everything: Din 7, width 33 (3 heads of 11), hidden 99, a bias-free Linear, a non-affine LayerNorm, Dout 5
        Model model = new Model(List.of(
                new Linear(7, 33, false, rng),
                new MultiHeadAttention(33, 3, false, true, rng),
                new MLP(33, 99, 33, true, dev.biflow.engine.nn.Activation.Kind.GELU, rng),
                new MultiHeadAttention(33, 3, true, true, rng),
                new LayerNorm(33, 1e-6f, false),
                new Linear(33, 5, true, rng)));
        Tensor x = Tensor.randn(new Rng(3), 3, tokens, 7);
        try (ResidentStack s = model.resident(be, 3, tokens)) {
            assertArrayEquals(new int[]{3, tokens, 5}, s.outputShape());
            assertClose(s.run(x.data()), model.cpu(x).data(), "odd widths T" + tokens);
        }
    }

    @Test
    void badInputNamesExpectedAndActualShape() {
        OpenClBackend be = opencl();
        Model model = bidir8(16, 64, 16, 2);
        try (ResidentStack s = model.resident(be, 2, 16)) {
            var e = assertThrows(IllegalArgumentException.class, () -> s.run(new float[2 * 16 * 15]));
            assertTrue(e.getMessage().contains("(2, 16, 16)") && e.getMessage().contains("512 floats")
                    && e.getMessage().contains("got 480 floats"), e.getMessage());
            var e2 = assertThrows(IllegalArgumentException.class, () -> s.forward(Tensor.zeros(2, 15, 16)));
            assertTrue(e2.getMessage().contains("(2, 16, 16)") && e2.getMessage().contains("(2, 15, 16)"), e2.getMessage());
        }
        Rng rng = new Rng(1);
        var e3 = assertThrows(IllegalArgumentException.class,
                () -> ResidentStack.builder(be, 1, 4).linear(new Linear(4, 8, true, rng)).mlpBlock(new MLP(16, 4, true, rng)));
        assertTrue(e3.getMessage().contains("takes 16 features") && e3.getMessage().contains("width is 8"), e3.getMessage());
        var e4 = assertThrows(UnsupportedOperationException.class, () -> ResidentStack.builder(be, 1, 4)
                .mlpBlock(new MLP(8, 16, 8, false, dev.biflow.engine.nn.Activation.Kind.SILU, rng)));
        assertTrue(e4.getMessage().contains("GELU"), e4.getMessage());
    }
}
