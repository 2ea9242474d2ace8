// What flow's device tests share: opening the OpenCL device (or skipping, with the reason) and comparing a
// device result with the CPU backend's within a stated tolerance.
package dev.biflow.flow;

import dev.biflow.engine.Tensor;
import dev.biflow.gpu.OpenClBackend;
import dev.biflow.gpu.OpenClUnavailableException;
import org.junit.jupiter.api.Assumptions;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

public final class OpenClTests {
    private OpenClTests() {}

    /**
     * The device named by -Dbiflow.test.device (default "opencl": the first GPU, else the first device).
     * Skips the calling test, printing why, only when OpenCL or a device is missing; a kernel that does
     * not build, or Aparapi falling back to Java threads, fails it.
     */
    public static OpenClBackend openOrSkip(String testName) {
        try {
            return OpenClBackend.open(System.getProperty("biflow.test.device", "opencl"));
        } catch (OpenClUnavailableException e) {
            if (!e.noDevice()) throw e;
            System.out.println("[" + testName + "] skipped: " + e.getMessage());
            Assumptions.abort("no OpenCL device: " + e.getMessage());
            throw e; // not reached: abort throws
        }
    }

    /**
     * Asserts every element of got within abs + rel |want| of want (same shape) and that want is not
     * trivially small (max |want| above minMax: a zero model would pass any tolerance); prints and
     * returns the largest difference.
     */
    public static double assertClose(String testName, String what, Tensor want, Tensor got, double abs, double rel, double minMax) {
        assertArrayEquals(want.shape(), got.shape(), what + ": shape");
        float[] w = want.data(), o = got.data();
        double maxAbs = 0, maxErr = 0;
        for (int i = 0; i < w.length; i++) {
            double err = Math.abs(w[i] - o[i]);
            if (!(err <= abs + rel * Math.abs(w[i])))
                throw new AssertionError(what + ": element " + i + " is " + o[i] + " on the device, " + w[i] + " on the CPU");
            maxErr = Math.max(maxErr, err);
            maxAbs = Math.max(maxAbs, Math.abs(w[i]));
        }
        System.out.printf("[%s] %s: max |x| %.3f, max |diff| %.2e%n", testName, what, maxAbs, maxErr);
        assertTrue(maxAbs > minMax, what + ": the random model's output is not trivially small");
        return maxErr;
    }
}
