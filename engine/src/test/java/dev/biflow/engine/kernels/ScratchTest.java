// Scratch: the reuse contract the inference paths rely on.
package dev.biflow.engine.kernels;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.*;

class ScratchTest {
    @Test
    void reusesAFreedArrayOfTheSameLengthOnlyAndNeverHandsOneOutTwice() {
        float[] a = Scratch.borrow(1000), b = Scratch.borrow(1000);
        assertNotSame(a, b, "two outstanding borrows are two arrays");
        Scratch.giveBack(a);
        assertSame(a, Scratch.borrow(1000), "a freed array of the length is reused");
        assertNotSame(b, Scratch.borrow(1000), "b is still out: not handed out again");
        Scratch.giveBack(b);
        float[] c = Scratch.borrow(999);
        assertEquals(999, c.length, "exactly the length asked for");
        assertNotSame(b, c);
        assertThrows(IllegalStateException.class, () -> { Scratch.giveBack(c); Scratch.giveBack(c); }, "given back twice");
        assertThrows(IllegalArgumentException.class, () -> Scratch.borrow(-1));
    }

    @Test
    void keepsABoundedNumberOfFreeArrays() {
        float[][] out = new float[Scratch.KEEP + 5][];
        for (int i = 0; i < out.length; i++) out[i] = Scratch.borrow(10 + i);
        for (float[] a : out) Scratch.giveBack(a);
        int reused = 0;
        for (int i = 0; i < out.length; i++) if (Scratch.borrow(10 + i) == out[i]) reused++;
        assertEquals(Scratch.KEEP, reused, "KEEP of the freed arrays are kept, no more");
    }

    @Test
    void eachThreadHasItsOwnPool() throws Exception {
        float[] a = Scratch.borrow(64);
        Scratch.giveBack(a);
        float[][] other = new float[1][];
        Thread t = new Thread(() -> other[0] = Scratch.borrow(64));
        t.start();
        t.join();
        assertNotSame(a, other[0], "another thread does not get this thread's free array");
        assertSame(a, Scratch.borrow(64));
    }
}
