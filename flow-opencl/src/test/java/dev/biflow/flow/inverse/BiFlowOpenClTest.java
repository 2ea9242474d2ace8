// End to end on the accelerator: one BiFlow 1-NFE sampling pass with Backend.use(OpenCL) matches the CPU backend, with its copies counted.
package dev.biflow.flow.inverse;

import dev.biflow.engine.Backend;
import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import dev.biflow.flow.model.NormControl;
import dev.biflow.flow.model.TarFlowConfig;
import dev.biflow.gpu.OpenClBackend;
import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * A small random G (every parameter random, so no layer is the identity; 14x14 images in 2x2
 * patches: T = 49 tokens, not a multiple of the kernels' 64-item work-groups; width 32, 2 heads of
 * 16, 2 stages + 1 denoising layer, training-time CFG) samples the same noise on the CPU backend and
 * on the OpenCL backend. On OpenCL every GEMM, every bidirectional attention (the fused kernel, via
 * Fused.attention's routing) runs on the device; LayerNorm, GELU and the elementwise ops stay on
 * the host. Prints the launches and copies of the pass. Skipped, with the reason, where no OpenCL
 * device exists; a kernel that does not build or falls back fails.
 * Tolerance: 1e-3 absolute + 1e-3 relative (float32 sums in a different order through 3 layers).
 */
class BiFlowOpenClTest {

    @Test
    void oneNfeSampleOnOpenClMatchesCpu() {
        OpenClBackend cl = dev.biflow.flow.OpenClTests.openOrSkip("BiFlowOpenClTest");
        TarFlowConfig f = new TarFlowConfig(1, 14, 2, 32, 2, 1, 3, 16, NormControl.SOFT, 3f);
        BackwardConfig c = BackwardConfig.forFlow(f).withSize(32, 16, 1, 1);
        assertEquals(BackwardConfig.Cfg.TRAINING_TIME, c.cfg());
        BiFlowModel g = BiFlowModelTest.randomModel(c, 21);
        Tensor eps = Tensor.randn(new Rng(8), 2, c.tokens(), c.tokenDim());
        int[] y = {0, 2};
        Backend before = Backend.active();
        try {
            Backend.use(Backend.CPU);
            Tensor want = g.sample(eps, y, 1.5f);
            Backend.use(cl);
            cl.transfers().reset();
            g.resetEvaluations();
            Tensor got = g.sample(eps, y, 1.5f);
            Backend.use(Backend.CPU);
            assertEquals(1, g.evaluations(), "1-NFE: one evaluation of G");
            assertTrue(cl.transfers().launches() > 0, "the model ran no kernel on the device");
            System.out.println("[BiFlowOpenClTest] " + cl.name() + ": one 1-NFE pass (B = 2, T = " + c.tokens() + "): " + cl.transfers());
            float[] w = want.data(), o = got.data();
            assertEquals(w.length, o.length);
            double maxAbs = 0, worst = 0;
            for (int i = 0; i < w.length; i++) {
                maxAbs = Math.max(maxAbs, Math.abs(w[i]));
                double tol = 1e-3 + 1e-3 * Math.abs(w[i]);
                if (!(Math.abs(w[i] - o[i]) <= tol))
                    throw new AssertionError("1-NFE sample: element " + i + " is " + o[i] + " on OpenCL, " + w[i] + " on the CPU");
                worst = Math.max(worst, Math.abs(w[i] - o[i]) / tol);
            }
            System.out.printf("[BiFlowOpenClTest] max |x| %.3f, worst |diff| / tolerance %.2e%n", maxAbs, worst);
            assertTrue(maxAbs > 1e-2, "the random model's output is not trivially zero");
        } finally {
            Backend.use(before);
            cl.close();
        }
    }
}
