// Tensor factories, accessors and printing; the seeded Rng; Shape helpers.
package dev.biflow.engine;

import org.junit.jupiter.api.Test;

import java.util.Arrays;
import java.util.Locale;

import static org.junit.jupiter.api.Assertions.*;
import static org.quicktheories.QuickTheory.qt;
import static org.quicktheories.generators.SourceDSL.integers;
import static org.quicktheories.generators.SourceDSL.longs;

class TensorBasicsTest {

    @Test
    void factories() {
        Tensor z = Tensor.zeros(2, 3);
        assertArrayEquals(new int[]{2, 3}, z.shape());
        assertArrayEquals(new float[6], z.data());
        assertArrayEquals(new float[]{1, 1, 1, 1}, Tensor.ones(4).data());
        assertArrayEquals(new float[]{2.5f, 2.5f}, Tensor.full(2.5f, 1, 2).data());
        assertArrayEquals(new float[]{0, 1, 2, 3, 4}, Tensor.arange(5).data());
        assertEquals(0, Tensor.arange(0).numel());
        assertEquals(7f, Tensor.scalar(7f).item());
        assertEquals(0, Tensor.scalar(7f).dim());
        assertEquals(1, Tensor.zeros().numel(), "no dims is a scalar");
        assertArrayEquals(new int[]{3, 2}, Tensor.zerosLike(Tensor.ones(3, 2)).shape());
        assertArrayEquals(new float[]{1, 1}, Tensor.onesLike(Tensor.zeros(2)).data());
        Tensor rows = Tensor.of(new float[][]{{1, 2, 3}, {4, 5, 6}});
        assertArrayEquals(new int[]{2, 3}, rows.shape());
        assertEquals(6f, rows.get(1, 2));
        assertEquals(2f, rows.get(0, 1));
        assertArrayEquals(new float[]{1.5f, -2f}, Tensor.of(new double[]{1.5, -2}, 2).data());
        float[] backing = {1, 2};
        assertSame(backing, Tensor.of(backing, 2).data(), "Tensor.of wraps without copying");
    }

    @Test
    void factoryShapesAreCopied() {
        int[] s = {2, 3};
        Tensor t = Tensor.zeros(s);
        s[0] = 5;
        assertArrayEquals(new int[]{2, 3}, t.shape());
        t.shape()[1] = 9;
        assertArrayEquals(new int[]{2, 3}, t.shape(), "shape() returns a copy");
        int[] s2 = {4};
        Tensor o = Tensor.of(new float[4], s2);
        s2[0] = 1;
        assertArrayEquals(new int[]{4}, o.shape());
    }

    @Test
    void randnIsReproducibleAndNormal() {
        Tensor a = Tensor.randn(new Rng(42), 3, 1000), b = Tensor.randn(new Rng(42), 3, 1000), c = Tensor.randn(new Rng(43), 3, 1000);
        assertArrayEquals(a.data(), b.data());
        assertFalse(Arrays.equals(a.data(), c.data()));
        Tensor big = Tensor.randn(new Rng(7), 200_000);
        double m = 0, v = 0;
        for (float x : big.data()) m += x;
        m /= big.numel();
        for (float x : big.data()) v += (x - m) * (x - m);
        v /= big.numel();
        // standard errors: 1/sqrt(n) = 0.0022 for the mean, sqrt(2/n) = 0.0032 for the variance
        assertEquals(0, m, 0.011);
        assertEquals(1, v, 0.016);
    }

    @Test
    void randIsInUnitIntervalAndUniform() {
        Tensor r = Tensor.rand(new Rng(9), 100_000);
        int[] bins = new int[10];
        for (float x : r.data()) {
            assertTrue(x >= 0f && x < 1f, "rand value " + x);
            bins[(int) (x * 10)]++;
        }
        for (int b : bins) assertEquals(10_000, b, 500, "bins " + Arrays.toString(bins));
        assertArrayEquals(Tensor.rand(new Rng(1), 5).data(), Tensor.rand(new Rng(1), 5).data());
    }

    @Test
    void toStringShowsShapeAndValuesInAnyLocale() {
        Locale saved = Locale.getDefault();
        try {
            Locale.setDefault(Locale.GERMANY);
            Tensor t = Tensor.of(new float[]{1, 2.5f, -3, 4, 5, 6}, 2, 3);
            String s = t.toString();
            assertTrue(s.startsWith("Tensor(2, 3)"), s);
            assertTrue(s.contains("2.5000") && s.contains("-3.0"), s);
            assertFalse(s.contains("2,5"), "locale leaked into " + s);
            assertTrue(Tensor.scalar(1.5f).toString().contains("()"), Tensor.scalar(1.5f).toString());
            String longRow = Tensor.arange(100).toString();
            assertTrue(longRow.contains("...") && longRow.contains("99.0") && !longRow.contains("50.0"), longRow);
            assertTrue(Tensor.zeros(2, 0).toString().contains("(2, 0)"));
        } finally {
            Locale.setDefault(saved);
        }
    }

    @Test
    void getSizeAndSameShape() {
        Tensor t = Tensor.of(new float[]{0, 1, 2, 3, 4, 5}, 3, 2);
        assertEquals(5f, t.get(2, 1));
        assertEquals(2, t.size(-1));
        assertEquals(3, t.size(0));
        assertEquals(2, t.dim());
        assertTrue(t.sameShape(Tensor.zeros(3, 2)));
        assertFalse(t.sameShape(Tensor.zeros(2, 3)));
        assertThrows(IndexOutOfBoundsException.class, () -> t.get(3, 0));
        assertThrows(IndexOutOfBoundsException.class, () -> t.get(0, 2));
        assertThrows(IllegalArgumentException.class, () -> t.get(0, 0, 0));
        float[] copy = t.toArray();
        copy[0] = 9;
        assertEquals(0f, t.get(0, 0), "toArray copies");
    }

    // ================================================================ Rng

    @Test
    void rngStateRoundTripsMidStream() {
        qt().withFixedSeed(3).withExamples(50).forAll(longs().all(), integers().between(0, 7)).checkAssert((seed, skip) -> {
            Rng r = new Rng(seed);
            for (int i = 0; i < skip; i++) r.nextGaussian(); // odd counts leave a spare normal in the state
            long[] st = r.state();
            double[] expect = {r.nextGaussian(), r.nextDouble(), r.nextGaussian(), r.nextFloat()};
            Rng q = new Rng(0);
            q.setState(st);
            double[] got = {q.nextGaussian(), q.nextDouble(), q.nextGaussian(), q.nextFloat()};
            assertArrayEquals(expect, got);
        });
        assertThrows(IllegalArgumentException.class, () -> new Rng(1).setState(new long[2]));
    }

    @Test
    void rngRangesAndPermutations() {
        Rng r = new Rng(11);
        int[] counts = new int[7];
        for (int i = 0; i < 70_000; i++) {
            int v = r.nextInt(7);
            counts[v]++;
            float f = r.nextFloat();
            assertTrue(f >= 0f && f < 1f);
            double d = r.nextDouble();
            assertTrue(d >= 0 && d < 1);
        }
        for (int c : counts) assertEquals(10_000, c, 400, Arrays.toString(counts));
        assertEquals(0, r.nextInt(1));
        assertThrows(IllegalArgumentException.class, () -> r.nextInt(0));
        int[] p = r.permutation(50);
        int[] sorted = p.clone();
        Arrays.sort(sorted);
        for (int i = 0; i < 50; i++) assertEquals(i, sorted[i]);
        assertEquals(0, r.permutation(0).length);
        assertArrayEquals(new Rng(5).permutation(20), new Rng(5).permutation(20));
    }

    @Test
    void rngSplitGivesIndependentReproducibleStreams() {
        Rng a = new Rng(1), b = new Rng(1);
        Rng ca = a.split(), cb = b.split();
        assertEquals(ca.nextLong(), cb.nextLong());
        assertNotEquals(a.nextLong(), ca.nextLong());
        // parent and child streams do not coincide over a stretch
        Rng p = new Rng(2), c = p.split();
        int same = 0;
        for (int i = 0; i < 1000; i++) if (p.nextLong() == c.nextLong()) same++;
        assertEquals(0, same);
    }

    // ================================================================ Shape

    @Test
    void shapeHelpers() {
        assertEquals("(2, 3)", Shape.str(new int[]{2, 3}));
        assertEquals("()", Shape.str(new int[0]));
        assertArrayEquals(new int[]{12, 4, 1}, Shape.strides(new int[]{2, 3, 4}));
        assertEquals(24, Shape.numel(new int[]{2, 3, 4}));
        assertEquals(1, Shape.numel(new int[0]));
        assertEquals(2, Shape.axis(-1, 3, "t"));
        assertEquals(0, Shape.axis(-2, new int[]{4, 5}, "t"));
        assertArrayEquals(new int[]{2, 3, 4}, Shape.broadcast(new int[]{3, 1}, new int[]{2, 1, 4}, "t"));
        assertArrayEquals(new int[]{0, 4, 1, 1}, Shape.broadcastStrides(new int[]{3, 4, 1}, new int[]{2, 3, 4, 1}));
        assertArrayEquals(new int[]{0, 1, 0}, Shape.broadcastStrides(new int[]{3, 1}, new int[]{2, 3, 5}));
        assertEquals(23, Shape.offset(new int[]{2, 3, 4}, new int[]{1, 2, 3}));
        assertEquals(12, Shape.prod(new int[]{2, 3, 4, 5}, 1, 3));
        assertArrayEquals(new int[]{1, 2, 3}, Shape.concat(new int[]{1}, 2, 3));
        assertThrows(IllegalArgumentException.class, () -> Shape.numelChecked(new int[]{1 << 16, 1 << 16}));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Shape.axis(0, new int[0], "sum"));
        assertTrue(e.getMessage().contains("scalar"), e.getMessage());
    }

    @Test
    void broadcastMatchesTheRuleProperty() {
        qt().withFixedSeed(12).withExamples(200).forAll(OpsElementwiseTest.bcases(1 << 20)).checkAssert(c ->
                assertArrayEquals(Ref.broadcast(c.a(), c.b()), Shape.broadcast(c.a(), c.b(), "t"), c.toString()));
    }
}
