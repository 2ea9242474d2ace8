// OpenCL-only behaviour: device selection, no silent fallback, counted copies, the KV-cache decode loop.
package dev.biflow.gpu;

import dev.biflow.engine.Backend;
import dev.biflow.engine.kernels.GemmEpilogue;
import org.junit.jupiter.api.Test;

import java.io.File;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.Random;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class OpenClBackendTest {

    @Test
    void cpuSpecIsTheCpuBackendAndUnknownSpecsAreRejected() {
        assertSame(Backend.CPU, Devices.backend("cpu"));
        var e = assertThrows(IllegalArgumentException.class, () -> Devices.backend("tpu"));
        assertTrue(e.getMessage().contains("cpu, opencl or opencl:N"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> Devices.backend("opencl:x"));
    }

    @Test
    void aMissingDeviceIndexFailsLoudlyNamingTheDevices() {
        var e = assertThrows(OpenClUnavailableException.class, () -> Devices.backend("opencl:99"));
        assertTrue(e.reason() == OpenClUnavailableException.Reason.BAD_INDEX || e.noDevice(), e.getMessage());
        assertTrue(e.getMessage().contains("apt-get install ocl-icd-libopencl1 pocl-opencl-icd"), e.getMessage());
    }

    /** With no ICD visible (OCL_ICD_VENDORS points at an empty folder, OCL_ICD_FILENAMES unset) asking for OpenCL throws: no CPU fallback. */
    @Test
    void noDeviceMeansAnErrorNotTheCpu() throws Exception {
        File empty = Files.createTempDirectory("no-icd").toFile();
        ProcessBuilder pb = new ProcessBuilder(System.getProperty("java.home") + "/bin/java", "--enable-native-access=ALL-UNNAMED",
                "-cp", System.getProperty("java.class.path"), NoDeviceProbe.class.getName(), "opencl")
                .redirectErrorStream(true);
        pb.environment().put("OCL_ICD_VENDORS", empty.getAbsolutePath());
        // ocl-icd also loads every library named in OCL_ICD_FILENAMES (the H200 machine sets it): hide those too
        pb.environment().remove("OCL_ICD_FILENAMES");
        Process p = pb.start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertTrue(p.waitFor(120, TimeUnit.SECONDS));
        assertTrue(!out.contains("backend="), out);
        assertTrue(out.contains("reason=NO_DEVICE") || out.contains("reason=NO_OPENCL"), out);
        assertTrue(out.contains("pocl-opencl-icd"), out);
        empty.delete();
    }

    @Test
    void copiesAreExplicitAndCounted() {
        OpenClBackend be = (OpenClBackend) BackendConformanceTest.backend("opencl");
        synchronized (be) {
            long l = be.transfers().launches(), p = be.transfers().puts(), g = be.transfers().gets();
            float[] a = new float[64 * 64], c = new float[64 * 64];
            be.gemm(false, false, 64, 64, 64, 1f, a, 0, 64, a, 0, 64, 0f, c, 0, 64, GemmEpilogue.NONE);
            assertEquals(1, be.transfers().launches() - l, "one launch");
            assertEquals(2, be.transfers().puts() - p, "A and B go up; C (beta = 0) does not");
            assertEquals(1, be.transfers().gets() - g, "C comes back");
        }
    }

    /** The decode loop (cache on the device) matches CPU attention of each prefix, i.e. the exact-inverse sampler's step. */
    @Test
    void kvCacheDecodeMatchesFullAttentionOnEachPrefix() {
        OpenClBackend be = (OpenClBackend) BackendConformanceTest.backend("opencl");
        int nb = 2, nh = 2, cap = 12, dh = 16, dv = 8, steps = 10, s = nb * nh;
        Random r = new Random(11);
        float[][] qs = new float[steps][], ks = new float[steps][], vs = new float[steps][];
        long puts0 = be.transfers().puts();
        try (var dec = be.decoder(nb, nh, cap, dh, dv)) {
            for (int t = 0; t < steps; t++) {
                qs[t] = Ref.rand(r, s * dh, 1f); ks[t] = Ref.rand(r, s * dh, 1f); vs[t] = Ref.rand(r, s * dv, 1f);
                float[] out = new float[s * dv];
                dec.step(qs[t], ks[t], vs[t], 0.25f, out);
                int len = t + 1;
                float[] k = new float[s * len * dh], v = new float[s * len * dv];
                for (int j = 0; j < len; j++)
                    for (int si = 0; si < s; si++) {
                        System.arraycopy(ks[j], si * dh, k, (si * len + j) * dh, dh);
                        System.arraycopy(vs[j], si * dv, v, (si * len + j) * dv, dv);
                    }
                Ref.assertClose("decode step " + t, Ref.attention(qs[t], k, v, nb, nh, 1, len, dh, dv, true, null, null, 0.25f),
                        out, out.length, 2e-5, 1e-4);
            }
            assertEquals(dec.length(), steps);
        }
        // 2 cache uploads once, then q, k, v rows per step: the cache is never re-sent.
        assertEquals(2 + 3L * steps, be.transfers().puts() - puts0);
    }
}
