// Warm-up + cosine schedule values at the landmarks, and its shape.
package dev.biflow.engine.optim;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.*;
import static org.quicktheories.QuickTheory.qt;
import static org.quicktheories.generators.SourceDSL.integers;

class LrScheduleTest {
    @Test
    void landmarks() {
        LrSchedule s = LrSchedule.warmupCosine(1e-6, 2e-3, 1e-5, 100, 1100);
        assertEquals(1e-6, s.at(0), 1e-18, "warm-up start");
        assertEquals(1e-6 + 0.5 * (2e-3 - 1e-6), s.at(50), 1e-15, "half-way through warm-up");
        assertEquals(2e-3, s.at(100), 1e-15, "warm-up end is the peak");
        assertEquals(1e-5 + 0.5 * (2e-3 - 1e-5), s.at(600), 1e-15, "cosine midpoint is half-way between peak and min");
        assertEquals(1e-5 + 0.5 * (1 + Math.cos(Math.PI * 0.25)) * (2e-3 - 1e-5), s.at(350), 1e-15);
        assertEquals(1e-5, s.at(1100), 1e-15, "end");
        assertEquals(1e-5, s.at(5000), 1e-15, "after the end");
        assertEquals(0.0, LrSchedule.warmupCosine(1, 0, 10, 20).at(0), "warm-up from 0 by default");
        assertEquals(0.3, LrSchedule.constant(0.3).at(12345));
        assertEquals(1.0, LrSchedule.warmupCosine(1, 0, 0, 10).at(0), "no warm-up starts at the peak");
    }

    @Test
    void risesThenFalls() {
        qt().withExamples(50).forAll(integers().between(0, 50), integers().between(1, 200)).checkAssert((w, extra) -> {
            LrSchedule s = LrSchedule.warmupCosine(0.1, 1.0, 0.01, w, w + extra);
            for (int k = 1; k <= w; k++) assertTrue(s.at(k) >= s.at(k - 1));
            for (int k = w + 1; k <= w + extra + 2; k++) assertTrue(s.at(k) <= s.at(k - 1) + 1e-15);
            for (int k = 0; k <= w + extra + 2; k++) assertTrue(s.at(k) >= 0.01 - 1e-12 || k < w);
        });
    }

    @Test
    void rejectsBadArguments() {
        assertThrows(IllegalArgumentException.class, () -> LrSchedule.warmupCosine(1, 0, 10, 5));
        assertThrows(IllegalArgumentException.class, () -> LrSchedule.warmupCosine(1, 0, 1, 2).at(-1));
    }
}
