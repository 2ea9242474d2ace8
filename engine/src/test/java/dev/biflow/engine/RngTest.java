package dev.biflow.engine;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

/** The normal stream can be entered anywhere (skipNormals), and entering it that way changes no value. */
class RngTest {
    /** The normal stream as Rng drew it before skipNormals (a redraw loop on u1 <= 1e-300): the reference for "unchanged". */
    private static final class OldGaussians {
        final Rng r;
        double spare;
        boolean has;

        OldGaussians(long seed) { r = new Rng(seed); }

        double next() {
            if (has) { has = false; return spare; }
            double u1, u2;
            do u1 = r.nextDouble(); while (u1 <= 1e-300);
            u2 = r.nextDouble();
            double rad = Math.sqrt(-2 * Math.log(u1));
            spare = rad * Math.sin(2 * Math.PI * u2);
            has = true;
            return rad * Math.cos(2 * Math.PI * u2);
        }
    }

    @Test
    void normalStreamIsUnchanged() {
        for (long seed : new long[]{0, 1, 42, -7}) {
            OldGaussians old = new OldGaussians(seed);
            Rng now = new Rng(seed);
            for (int i = 0; i < 200_000; i++) assertEquals(Double.doubleToRawLongBits(old.next()), Double.doubleToRawLongBits(now.nextGaussian()), "seed " + seed + " draw " + i);
        }
    }

    @Test
    void skippingEqualsDrawing() {
        Rng pick = new Rng(99);
        for (int trial = 0; trial < 300; trial++) {
            long seed = pick.nextLong();
            int pre = pick.nextInt(3), k = pick.nextInt(1000), m = 1 + pick.nextInt(7);
            Rng drawn = new Rng(seed), skipped = new Rng(seed);
            for (int i = 0; i < pre; i++) { drawn.nextGaussian(); skipped.nextGaussian(); } // enter with and without a spare
            for (int i = 0; i < k; i++) drawn.nextGaussian();
            skipped.skipNormals(k);
            for (int i = 0; i < m; i++)
                assertEquals(Double.doubleToRawLongBits(drawn.nextGaussian()), Double.doubleToRawLongBits(skipped.nextGaussian()),
                        "seed " + seed + " pre " + pre + " skip " + k + " draw " + i);
            assertEquals(drawn.nextLong(), skipped.nextLong(), "the uniform stream after the normals");
        }
    }

    @Test
    void imageRangesOfOneSeedJoinUp() {
        // the noise of images [3, 7) of a (10, 6) randn tensor, drawn on its own
        float[] all = Tensor.randn(new Rng(5), 10, 6).data();
        Rng r = new Rng(5);
        r.skipNormals(3L * 6);
        float[] part = Tensor.randn(r, 4, 6).data();
        for (int i = 0; i < part.length; i++) assertEquals(Float.floatToRawIntBits(all[18 + i]), Float.floatToRawIntBits(part[i]));
    }

    @Test
    void negativeSkipIsRefused() {
        assertThrows(IllegalArgumentException.class, () -> new Rng(0).skipNormals(-1));
    }
}
