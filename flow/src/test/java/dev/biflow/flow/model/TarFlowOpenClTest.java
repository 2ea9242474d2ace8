// End to end on the accelerator: a TarFlow forward and exact inverse with Backend.use(OpenCL) match the CPU backend.
package dev.biflow.flow.model;

import dev.biflow.engine.Backend;
import dev.biflow.engine.Grad;
import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.nn.Init;
import dev.biflow.gpu.OpenClBackend;
import dev.biflow.gpu.OpenClUnavailableException;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Runs the same random TarFlow on the CPU backend and on the OpenCL backend (every GEMM of the
 * model, attention's included, goes to the device through Backend.active()). Skipped, with the
 * reason, where no OpenCL device exists; a kernel that does not build or falls back fails.
 * Tolerance: 2e-3 absolute + 2e-3 relative on z, the log-det and the inverse (float32 GEMMs summed
 * in a different order through 2 blocks x 2 layers).
 */
class TarFlowOpenClTest {

    @Test
    void forwardAndExactInverseOnOpenClMatchCpu() {
        OpenClBackend cl;
        try {
            cl = OpenClBackend.open(System.getProperty("biflow.test.device", "opencl"));
        } catch (OpenClUnavailableException e) {
            if (!e.noDevice()) throw e;
            System.out.println("[TarFlowOpenClTest] skipped: " + e.getMessage());
            Assumptions.abort("no OpenCL device: " + e.getMessage());
            return;
        }
        TarFlowConfig cfg = TarFlowConfig.tarflow(1, 16, 4, 128, 2, 2, 10); // T = 16 tokens, D = 128, 2 heads of 64
        Rng rng = new Rng(5);
        TarFlow model = new TarFlow(cfg, rng);
        for (Tensor p : model.namedParameters().values())
            Init.normal(p, rng, 0, p.dim() == 2 ? 0.3 / Math.sqrt(p.size(1)) : 0.02);
        Tensor x = Tensor.randn(rng, 2, 1, 16, 16);
        int[] y = {3, 7};
        Backend before = Backend.active();
        try (var ng = Grad.noGrad()) {
            Backend.use(Backend.CPU);
            TarFlow.Forward cpu = model.forward(x, y);
            Tensor xCpu = model.reverse(cpu.z(), y, TarFlow.Guidance.NONE);
            long launches0 = cl.transfers().launches();
            Backend.use(cl);
            TarFlow.Forward gpu = model.forward(x, y);
            Tensor xGpu = model.reverse(cpu.z(), y, TarFlow.Guidance.NONE);
            Backend.use(Backend.CPU);
            assertTrue(cl.transfers().launches() - launches0 > 0, "the model ran no kernel on the device");
            close("z", cpu.z(), gpu.z());
            close("logdet", cpu.logdet(), gpu.logdet());
            close("exact inverse", xCpu, xGpu);
            close("inverse recovers x", x, xGpu);
            System.out.println("[TarFlowOpenClTest] " + cl.name() + ": " + cl.transfers());
        } finally {
            Backend.use(before);
            cl.close();
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
