// Fuzzes the training-state reader and its restore into an optimizer, EMA and RNG.
package dev.biflow.flow.train;

import com.code_intelligence.jazzer.junit.DictionaryEntries;
import com.code_intelligence.jazzer.junit.FuzzTest;
import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.nn.Linear;
import dev.biflow.engine.optim.AdamW;
import dev.biflow.engine.optim.Ema;

import java.io.IOException;

import static org.junit.jupiter.api.Assertions.*;

/**
 * Any bytes either parse into a state whose order is a permutation and whose cursor lies in it,
 * or raise an IOException (CorruptFileException, or "not a valid training state") naming the
 * source; restoring a parsed state into a small model's AdamW/EMA either works or is an
 * IllegalArgumentException. A normal {@code mvn test} replays {@code TrainingStateFuzzTestInputs/read/}.
 */
class TrainingStateFuzzTest {
    @FuzzTest(maxDuration = "2m")
    @DictionaryEntries({"{\"", "\":{\"dtype\":\"F32\",\"shape\":[", "],\"data_offsets\":[", "\"__metadata__\":{", "\"step\":\"",
            "\"cursor\":\"", "\"rng\":\"", "data_order", "opt.", "ema.", "weight", "bias", ".m", ".v", "\"I64\"", "\"I32\""})
    void read(byte[] input) {
        TrainingState s;
        try {
            s = TrainingState.read(input, "fuzz-input");
        } catch (IOException e) {
            assertTrue(e.getMessage().startsWith("fuzz-input"), e.getMessage());
            return;
        } catch (IllegalArgumentException e) {
            assertTrue(e.getMessage().contains("fuzz-input"), e.getMessage());
            return;
        }
        int[] order = s.order();
        boolean[] seen = new boolean[order.length];
        for (int v : order) {
            assertFalse(seen[v]);
            seen[v] = true;
        }
        assertTrue(s.cursor() >= 0 && s.cursor() <= order.length && s.step() >= 0);
        Linear l = new Linear(2, 3, true, new Rng(1));
        java.util.List<Tensor> params = l.parameters();
        try {
            s.restore(new AdamW(params, 1e-3), new Ema(params, 0.99), new Rng(0));
        } catch (IllegalArgumentException e) {
            // a state of another model: refused with a message
            assertNotNull(e.getMessage());
        }
    }
}
