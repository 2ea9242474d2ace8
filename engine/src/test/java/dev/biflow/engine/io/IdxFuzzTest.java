// Fuzzes the IDX reader (plain and gzipped): any bytes either parse into a consistent result or raise CorruptFileException.
package dev.biflow.engine.io;

import com.code_intelligence.jazzer.junit.FuzzTest;
import dev.biflow.engine.Tensor;

import static org.junit.jupiter.api.Assertions.*;

/**
 * A normal {@code mvn test} replays the seeds in {@code IdxFuzzTestInputs/parse/} (test resources);
 * {@code JAZZER_FUZZ=1 mvn -pl engine test -Dtest=IdxFuzzTest} fuzzes.
 */
class IdxFuzzTest {
    @FuzzTest(maxDuration = "60s")
    void parse(byte[] input) {
        Idx.Data d;
        try {
            d = Idx.read(input, "fuzz-input");
        } catch (CorruptFileException e) {
            assertTrue(e.getMessage().startsWith("fuzz-input: "), e.getMessage());
            return;
        }
        Tensor t = d.toTensor();
        assertArrayEquals(d.dims(), t.shape());
        assertEquals(d.numel(), t.numel());
        if (d.type().isInteger()) assertEquals(d.numel(), d.toInts().length);
        // Plain (non-gzip) input is exactly header + data; re-encoding it gives the same bytes.
        if (input.length < 2 || input[0] != 0x1F || input[1] != (byte) 0x8B) {
            assertEquals(4 + 4L * d.dims().length + d.raw().length, input.length);
            if (d.type().size() <= 2) assertArrayEquals(input, Idx.encode(d.type(), t));
        }
    }
}
