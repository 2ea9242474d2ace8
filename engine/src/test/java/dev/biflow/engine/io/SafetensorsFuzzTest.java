// Fuzzes the safetensors reader: any bytes either parse into a consistent result or raise CorruptFileException.
package dev.biflow.engine.io;

import com.code_intelligence.jazzer.junit.DictionaryEntries;
import com.code_intelligence.jazzer.junit.FuzzTest;
import dev.biflow.engine.Tensor;

import java.util.Map;

import static org.junit.jupiter.api.Assertions.*;

/**
 * A normal {@code mvn test} replays the seeds in {@code SafetensorsFuzzTestInputs/parse/} (test
 * resources); {@code JAZZER_FUZZ=1 mvn -pl engine test -Dtest=SafetensorsFuzzTest} fuzzes and
 * stores any crashing input there. Any exception other than CorruptFileException fails the test,
 * and so would an OutOfMemoryError from a size field trusted too early.
 */
class SafetensorsFuzzTest {
    @FuzzTest(maxDuration = "60s")
    @DictionaryEntries({"{\"", "\":{\"dtype\":\"F32\",\"shape\":[", "],\"data_offsets\":[", "\"__metadata__\":{",
            "F16", "BF16", "I64", "U8", "BOOL", "F8_E4M3"})
    void parse(byte[] input) {
        Safetensors.Contents c;
        try {
            c = Safetensors.read(input, "fuzz-input");
        } catch (CorruptFileException e) {
            assertTrue(e.getMessage().startsWith("fuzz-input: "), e.getMessage());
            return;
        }
        Safetensors.Header h = c.header();
        assertEquals(h.names(), java.util.List.copyOf(c.tensors().keySet()));
        for (Safetensors.TensorInfo t : h.tensors()) {
            Tensor x = c.tensor(t.name());
            assertArrayEquals(t.shape(), x.shape());
            assertEquals(t.numel() * t.dtype().size(), t.end() - t.begin());
            assertTrue(h.dataStart() + t.end() <= input.length);
        }
        // Whatever parsed must survive a write and re-read with the same float bits.
        Safetensors.Contents again;
        try {
            again = Safetensors.read(Safetensors.toBytes(c.tensors(), c.metadata()), "rewritten");
        } catch (CorruptFileException e) {
            throw new AssertionError("re-reading our own output failed", e);
        }
        assertEquals(c.metadata(), again.metadata());
        for (Map.Entry<String, Tensor> e : c.tensors().entrySet()) {
            float[] a = e.getValue().data(), b = again.tensor(e.getKey()).data();
            assertEquals(a.length, b.length);
            for (int i = 0; i < a.length; i++) assertEquals(Float.floatToRawIntBits(a[i]), Float.floatToRawIntBits(b[i]));
        }
    }
}
