// EMA maths, warm-up decay, swap/copy for evaluation, and state round trip.
package dev.biflow.engine.optim;

import dev.biflow.engine.Tensor;
import org.junit.jupiter.api.Test;

import java.util.List;

import static dev.biflow.engine.optim.OptimTestUtil.f;
import static org.junit.jupiter.api.Assertions.*;

class EmaTest {
    @Test
    void shadowFollowsTheRecurrence() {
        Tensor p = Tensor.of(f(1, -2), 2);
        Ema ema = new Ema(List.of(p), 0.9);
        double[] s = {1, -2};
        for (int k = 0; k < 20; k++) {
            p.data()[0] = k;
            p.data()[1] = -k * 0.5f;
            ema.update();
            s[0] = 0.9 * s[0] + 0.1 * k;
            s[1] = 0.9 * s[1] + 0.1 * (-k * 0.5);
            assertEquals(s[0], ema.shadow(0).data()[0], 1e-5);
            assertEquals(s[1], ema.shadow(0).data()[1], 1e-5);
        }
        assertEquals(20, ema.numUpdates());
        // a constant parameter is a fixed point
        Tensor c = Tensor.of(f(3, 3), 2);
        Ema e2 = new Ema(List.of(c), 0.999);
        for (int k = 0; k < 10; k++) e2.update();
        assertArrayEquals(f(3, 3), e2.shadow(0).data());
    }

    @Test
    void warmupDecay() {
        Tensor p = Tensor.zeros(1);
        Ema ema = new Ema(List.of(p), 0.999, true);
        assertEquals(0.1, ema.currentDecay(), 1e-12); // (1+0)/(10+0)
        p.data()[0] = 10;
        ema.update();
        assertEquals(0.9 * 10, ema.shadow(0).item(), 1e-5);
        assertEquals(2.0 / 11, ema.currentDecay(), 1e-12);
    }

    @Test
    void swapAndCopyTo() {
        Tensor p = Tensor.of(f(1, 1), 2);
        Ema ema = new Ema(List.of(p), 0.5);
        p.data()[0] = 3;
        p.data()[1] = 5;
        ema.update(); // shadow = (2, 3)
        ema.swap();
        assertArrayEquals(f(2, 3), p.data(), "evaluation sees the averages");
        ema.swap();
        assertArrayEquals(f(3, 5), p.data(), "and the live weights come back");
        Tensor other = Tensor.zeros(2);
        ema.copyTo(List.of(other));
        assertArrayEquals(f(2, 3), other.data());
        assertThrows(IllegalArgumentException.class, () -> ema.copyTo(List.of(Tensor.zeros(3))));
        ema.copyToParams();
        assertArrayEquals(f(2, 3), p.data());
    }

    @Test
    void stateRoundTrip() {
        Tensor p = Tensor.of(f(1, 2), 2);
        Ema a = new Ema(List.of(p), 0.9);
        p.data()[0] = 7;
        a.update();
        Ema b = new Ema(List.of(p), 0.9);
        b.loadState(a.state());
        assertEquals(1, b.numUpdates());
        assertArrayEquals(a.shadow(0).data(), b.shadow(0).data());
        a.update();
        b.update();
        assertArrayEquals(a.shadow(0).data(), b.shadow(0).data());
        var bad = new java.util.HashMap<>(a.state());
        bad.put("shadow.0", Tensor.zeros(3));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> b.loadState(bad));
        assertTrue(e.getMessage().contains("shadow.0"));
    }
}
