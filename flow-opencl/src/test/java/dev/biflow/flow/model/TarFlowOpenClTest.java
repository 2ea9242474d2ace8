// End to end on the accelerator: a TarFlow forward and exact inverse with Backend.use(OpenCL) match the CPU backend.
package dev.biflow.flow.model;

import dev.biflow.engine.Backend;
import dev.biflow.engine.Grad;
import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.nn.Init;
import dev.biflow.gpu.OpenClBackend;
import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Runs the same random TarFlow on the CPU backend and on the OpenCL backend (every GEMM of the
 * model and every attention, forward and backward, go to the device through Backend.active()),
 * and prints each pass's launches and copies. Skipped, with the
 * reason, where no OpenCL device exists; a kernel that does not build or falls back fails.
 * Tolerance: 2e-3 absolute + 2e-3 relative on z, the log-det and the inverse (float32 GEMMs summed
 * in a different order through 2 blocks x 2 layers).
 */
class TarFlowOpenClTest {

    /** The OpenCL backend, or the test is skipped (with the reason) where no device exists. */
    private static OpenClBackend openOrSkip() { return dev.biflow.flow.OpenClTests.openOrSkip("TarFlowOpenClTest"); }

    private static TarFlow randomModel(Rng rng) {
        TarFlowConfig cfg = TarFlowConfig.tarflow(1, 16, 4, 128, 2, 2, 10); // T = 16 tokens, D = 128, 2 heads of 64
        TarFlow model = new TarFlow(cfg, rng);
        for (Tensor p : model.namedParameters().values())
            Init.normal(p, rng, 0, p.dim() == 2 ? 0.3 / Math.sqrt(p.size(1)) : 0.02);
        return model;
    }

    @Test
    void forwardAndExactInverseOnOpenClMatchCpu() {
        OpenClBackend cl = openOrSkip();
        Rng rng = new Rng(5);
        TarFlow model = randomModel(rng);
        Tensor x = Tensor.randn(rng, 2, 1, 16, 16);
        int[] y = {3, 7};
        Backend before = Backend.active();
        try (var ng = Grad.noGrad()) {
            Backend.use(Backend.CPU);
            TarFlow.Forward cpu = model.forward(x, y);
            Tensor xCpu = model.reverse(cpu.z(), y, TarFlow.Guidance.NONE);
            Backend.use(cl);
            cl.transfers().reset();
            TarFlow.Forward gpu = model.forward(x, y);
            System.out.println("[TarFlowOpenClTest] " + cl.name() + ": forward (B = 2, T = 16): " + cl.transfers());
            assertTrue(cl.transfers().launches() > 0, "the model ran no kernel on the device");
            cl.transfers().reset();
            Tensor xGpu = model.reverse(cpu.z(), y, TarFlow.Guidance.NONE);
            System.out.println("[TarFlowOpenClTest] " + cl.name() + ": exact inverse (16 KV-cached steps x 2 blocks): " + cl.transfers());
            Backend.use(Backend.CPU);
            close("z", cpu.z(), gpu.z());
            close("logdet", cpu.logdet(), gpu.logdet());
            close("exact inverse", xCpu, xGpu);
            close("inverse recovers x", x, xGpu);
        } finally {
            Backend.use(before);
            cl.close();
        }
    }

    /**
     * A training step's gradients: the NLL loss's backward with OpenCL active (attention backward on
     * the device through Fused.attention's routing, every GEMM of the backward on the device) gives
     * the CPU's parameter gradients. Tolerance per parameter tensor: 2e-3 * max|grad| of that tensor
     * on the CPU + 2e-3 relative.
     */
    @Test
    void trainingGradientsOnOpenClMatchCpu() {
        OpenClBackend cl = openOrSkip();
        Rng rng = new Rng(6);
        TarFlow model = randomModel(rng);
        Tensor x = Tensor.randn(rng, 2, 1, 16, 16);
        int[] y = {1, 4};
        Backend before = Backend.active();
        try {
            Backend.use(Backend.CPU);
            model.zeroGrad();
            Tensor lossCpu = TarFlow.loss(model.forward(x, y));
            lossCpu.backward();
            java.util.Map<String, float[]> want = new java.util.LinkedHashMap<>();
            model.namedParameters().forEach((n, p) -> want.put(n, p.grad() == null ? null : p.grad().data().clone()));
            model.zeroGrad();
            Backend.use(cl);
            cl.transfers().reset();
            Tensor lossGpu = TarFlow.loss(model.forward(x, y));
            System.out.println("[TarFlowOpenClTest] " + cl.name() + ": training forward (B = 2, T = 16): " + cl.transfers());
            cl.transfers().reset();
            lossGpu.backward();
            System.out.println("[TarFlowOpenClTest] " + cl.name() + ": training backward: " + cl.transfers());
            Backend.use(Backend.CPU);
            close("loss", lossCpu, lossGpu);
            int checked = 0;
            double worst = 0; // largest |diff| / tolerance
            for (var e : model.namedParameters().entrySet()) {
                float[] w = want.get(e.getKey());
                if (w == null) continue;
                float[] g = e.getValue().grad().data();
                double scale = 0;
                for (float v : w) scale = Math.max(scale, Math.abs(v));
                for (int i = 0; i < w.length; i++) {
                    double tol = 2e-3 * scale + 2e-3 * Math.abs(w[i]);
                    if (!(Math.abs(w[i] - g[i]) <= tol))
                        throw new AssertionError("grad " + e.getKey() + "[" + i + "] is " + g[i] + " on OpenCL, " + w[i] + " on the CPU (max |grad| " + scale + ")");
                    if (tol > 0) worst = Math.max(worst, Math.abs(w[i] - g[i]) / tol);
                }
                checked++;
            }
            System.out.printf("[TarFlowOpenClTest] %d parameter gradients match; worst |diff| / tolerance %.2e%n", checked, worst);
            assertTrue(checked > 10, "only " + checked + " parameters have gradients");
        } finally {
            Backend.use(before);
            cl.close();
            model.zeroGrad();
        }
    }

    private static void close(String what, Tensor want, Tensor got) {
        float[] w = want.data(), g = got.data();
        assertTrue(w.length == g.length, what + ": sizes differ");
        for (int i = 0; i < w.length; i++) {
            double tol = 2e-3 + 2e-3 * Math.abs(w[i]);
            if (!(Math.abs(w[i] - g[i]) <= tol))
                throw new AssertionError(what + ": element " + i + " is " + g[i] + " on OpenCL, " + w[i] + " on CPU");
        }
    }
}
