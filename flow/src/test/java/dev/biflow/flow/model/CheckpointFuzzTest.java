// Fuzzes checkpoint loading end to end: safetensors bytes + config metadata -> a TARFlow (or one clear error).
package dev.biflow.flow.model;

import com.code_intelligence.jazzer.junit.DictionaryEntries;
import com.code_intelligence.jazzer.junit.FuzzTest;
import dev.biflow.engine.io.CorruptFileException;

import static org.junit.jupiter.api.Assertions.*;

/**
 * Any bytes either load into a model consistent with its config, or fail with a
 * CorruptFileException (bad file, or too large for the memory budget) or an
 * IllegalArgumentException naming the source (bad or oversized config, missing or misshapen
 * weights, NaN). Anything else, an OutOfMemoryError or a hang is a finding. A normal
 * {@code mvn test} replays {@code CheckpointFuzzTestInputs/load/}; scripts/fuzz.sh fuzzes.
 */
class CheckpointFuzzTest {
    @FuzzTest(maxDuration = "2m")
    @DictionaryEntries({"{\"", "\":{\"dtype\":\"F32\",\"shape\":[", "],\"data_offsets\":[", "\"__metadata__\":{", "\"config\":\"",
            "\\\"in_channels\\\":", "\\\"img_size\\\":", "\\\"patch_size\\\":", "\\\"channels\\\":", "\\\"num_blocks\\\":",
            "\\\"layers_per_block\\\":", "\\\"num_classes\\\":", "\\\"head_dim\\\":", "\\\"norm_control\\\":", "\\\"clip\\\":",
            "\"kind\":\"tarflow\"", "blocks.0.", "attn_blocks.0.", "proj_in.weight", "pos_embed", "class_embed", "var", "F16", "BF16", "U8"})
    void load(byte[] input) {
        TarFlow m;
        try {
            m = Checkpoints.loadTarFlow(input, "fuzz-input");
        } catch (CorruptFileException e) {
            assertTrue(e.getMessage().startsWith("fuzz-input: "), e.getMessage());
            return;
        } catch (IllegalArgumentException e) {
            assertTrue(e.getMessage().startsWith("fuzz-input"), e.getMessage());
            return;
        } catch (java.io.IOException e) {
            throw new AssertionError("an in-memory load threw a plain IOException", e);
        }
        long values = 0;
        for (var t : m.stateDict().values()) values += t.numel();
        assertEquals((long) m.config.stateValues(), values, "the config's size is the model's");
        // the loaded model round-trips
        try {
            TarFlow again = Checkpoints.loadTarFlow(Checkpoints.toBytes(m, null), "rewritten");
            assertEquals(m.config, again.config);
        } catch (java.io.IOException e) {
            throw new AssertionError("re-reading our own checkpoint failed", e);
        }
    }
}
