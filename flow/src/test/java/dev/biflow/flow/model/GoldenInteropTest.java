// Interop with apple/ml-tarflow: its own outputs on random weights must be reproduced here.
package dev.biflow.flow.model;

import dev.biflow.engine.Tensor;
import dev.biflow.engine.io.Safetensors;
import org.junit.jupiter.api.Test;

import java.nio.file.Files;
import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

class GoldenInteropTest {
    static final Path DIR = Path.of("src/test/resources/golden/tarflow-p4-w64");

    static float maxAbsDiff(Tensor a, Tensor b) {
        assertArrayEquals(a.shape(), b.shape(), "shapes differ");
        float m = 0;
        for (int i = 0; i < a.numel(); i++) m = Math.max(m, Math.abs(a.data()[i] - b.data()[i]));
        return m;
    }

    static int[] labels(Tensor y) {
        int[] r = new int[y.numel()];
        for (int i = 0; i < r.length; i++) r[i] = Math.round(y.data()[i]);
        return r;
    }

    @Test
    void forwardMatchesPyTorch() throws Exception {
        TarFlow model = Checkpoints.loadTarFlow(DIR.resolve("model.safetensors"));
        var io = Safetensors.read(DIR.resolve("io.safetensors"));
        int[] y = labels(io.tensor("y"));
        assertArrayEquals(new int[]{2, 8}, y);
        TarFlow.Forward f = model.forward(io.tensor("x"), y);
        assertTrue(maxAbsDiff(f.outputs().get(0), io.tensor("block_out.0")) < 1e-4, "block 0 output");
        assertTrue(maxAbsDiff(f.outputs().get(1), io.tensor("block_out.1")) < 1e-4, "block 1 output");
        assertTrue(maxAbsDiff(f.z(), io.tensor("z")) < 1e-4, "z");
        float dl = maxAbsDiff(f.logdet(), io.tensor("logdet"));
        assertTrue(dl < 1e-5, "logdet differs by " + dl);
    }

    @Test
    void exactInverseMatchesPyTorch() throws Exception {
        TarFlow model = Checkpoints.loadTarFlow(DIR.resolve("model.safetensors"));
        var io = Safetensors.read(DIR.resolve("io.safetensors"));
        Tensor x = model.reverse(io.tensor("z_sample"), labels(io.tensor("y")), TarFlow.Guidance.NONE);
        float d = maxAbsDiff(x, io.tensor("x_sample"));
        assertTrue(d < 1e-3, "x_sample differs by " + d);
    }

    @Test
    void checkpointWrittenHereReloadsBitExactly(@org.junit.jupiter.api.io.TempDir Path tmp) throws Exception {
        TarFlow model = Checkpoints.loadTarFlow(DIR.resolve("model.safetensors"));
        Path p = tmp.resolve("m.safetensors");
        Checkpoints.save(model, p, null);
        TarFlow back = Checkpoints.loadTarFlow(p);
        var io = Safetensors.read(DIR.resolve("io.safetensors"));
        int[] y = labels(io.tensor("y"));
        Tensor z1 = model.forward(io.tensor("x"), y).z(), z2 = back.forward(io.tensor("x"), y).z();
        assertArrayEquals(z1.data(), z2.data());
        assertEquals(model.config, back.config);
        assertTrue(Files.size(p) > 0);
    }
}
