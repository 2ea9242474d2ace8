// Shape ops: reshape, permute, transpose, flip, concat, split, chunk, narrow, indexSelect, pad.
package dev.biflow.engine;

import org.junit.jupiter.api.Test;
import org.quicktheories.core.Gen;
import org.quicktheories.generators.Generate;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;

import static dev.biflow.engine.Ref.D;
import static org.junit.jupiter.api.Assertions.*;
import static org.quicktheories.QuickTheory.qt;

class OpsShapeTest {

    static Gen<int[]> shapes(int minRank, int maxRank) {
        return Generate.intArrays(Generate.range(minRank, maxRank), Generate.pick(List.of(1, 2, 3, 4, 5, 9)));
    }

    @Test
    void reshapeKeepsValuesAndInfersMinusOne() {
        Tensor x = TestData.randn(1, 2, 3, 4);
        assertArrayEquals(new int[]{6, 4}, Ops.reshape(x, 6, -1).shape());
        assertArrayEquals(new int[]{2, 12}, Ops.reshape(x, -1, 12).shape());
        assertArrayEquals(new int[]{24}, Ops.reshape(x, -1).shape());
        assertArrayEquals(new int[]{1, 24, 1}, Ops.reshape(x, 1, -1, 1).shape());
        assertArrayEquals(x.data(), Ops.reshape(x, 4, 6).data());
        assertArrayEquals(new int[0], Ops.reshape(Tensor.ones(1, 1), new int[0]).shape());
        assertArrayEquals(new int[]{3, 0}, Ops.reshape(Tensor.zeros(0, 3), 3, 0).shape());
        GradCheck.of("reshape", t -> Ops.reshape(t[0], 4, -1)).ref(d -> d[0].clone()).check(x);
        GradCheck.of("Tensor.reshape", t -> t[0].reshape(3, 8)).ref(d -> d[0].clone()).check(x);
    }

    /** A shape and a permutation of its axes. */
    record PCase(int[] shape, int[] perm) {
        @Override public String toString() { return Shape.str(shape) + " perm " + Arrays.toString(perm); }
    }

    @Test
    void permuteProperty() {
        Gen<PCase> g = shapes(1, 5).zip(Generate.longRange(0, 1000), (s, seed) -> {
            List<Integer> p = new ArrayList<>();
            for (int i = 0; i < s.length; i++) p.add(i);
            Collections.shuffle(p, new java.util.Random(seed));
            return new PCase(s, p.stream().mapToInt(Integer::intValue).toArray());
        });
        qt().withFixedSeed(9).withExamples(60).forAll(g).checkAssert(c -> {
            Tensor x = TestData.randn(2, c.shape());
            GradCheck.of("permute " + c, t -> Ops.permute(t[0], c.perm()))
                    .ref(d -> Ref.permute(new D(d[0], c.shape()), c.perm()).v()).check(x);
        });
    }

    @Test
    void permuteWithNegativeAxesAndScalars() {
        Tensor x = TestData.randn(3, 2, 3, 4);
        assertArrayEquals(Ops.permute(x, 2, 0, 1).data(), Ops.permute(x, -1, 0, -2).data());
        assertArrayEquals(new int[]{4, 2, 3}, x.permute(2, 0, 1).shape());
        assertEquals(5f, Ops.permute(Tensor.scalar(5f)).item());
    }

    @Test
    void transpose() {
        Tensor x = TestData.randn(4, 2, 3, 5);
        for (int[] ab : new int[][]{{0, 1}, {1, 2}, {0, 2}, {-1, -2}, {1, 1}}) {
            int[] p = {0, 1, 2};
            int a0 = Math.floorMod(ab[0], 3), a1 = Math.floorMod(ab[1], 3);
            p[a0] = a1;
            p[a1] = a0;
            GradCheck.of("transpose " + Arrays.toString(ab), t -> Ops.transpose(t[0], ab[0], ab[1]))
                    .ref(d -> Ref.permute(new D(d[0], x.shape()), p).v()).check(x);
        }
        // large enough to split across threads
        Tensor big = TestData.randn(5, 300, 257);
        OpsElementwiseTest.assertClose(Ref.permute(D.of(big), new int[]{1, 0}).v(), big.transpose(0, 1).data(), 0, "big transpose");
    }

    @Test
    void flip() {
        Tensor x = TestData.randn(6, 2, 3, 5);
        for (int ax = -3; ax < 3; ax++) {
            int a = Math.floorMod(ax, 3);
            GradCheck.of("flip " + ax, t -> Ops.flip(t[0], a)).ref(d -> Ref.flip(new D(d[0], x.shape()), a).v()).check(x);
        }
        assertArrayEquals(new float[]{3, 2, 1}, Ops.flip(Tensor.of(new float[]{1, 2, 3}, 3), -1).data());
    }

    @Test
    void concatAlongEachAxis() {
        for (int ax = 0; ax < 3; ax++) {
            int[] s1 = {2, 3, 4}, s2 = {2, 3, 4}, s3 = {2, 3, 4};
            s1[ax] = 1;
            s2[ax] = 5;
            s3[ax] = 2;
            int a = ax;
            Tensor x = TestData.randn(7, s1), y = TestData.randn(8, s2), z = TestData.randn(9, s3);
            GradCheck.of("concat " + ax, t -> Ops.concat(a, t[0], t[1], t[2]))
                    .ref(d -> Ref.concat(a, new D(d[0], s1), new D(d[1], s2), new D(d[2], s3)).v()).check(x, y, z);
            // negative axis is the same
            assertArrayEquals(Ops.concat(a, x, y, z).data(), Ops.concat(a - 3, x, y, z).data());
        }
    }

    @Test
    void concatSameTensorTwiceAndEmptyPieces() {
        Tensor x = TestData.randn(10, 2, 3);
        GradCheck.of("concat x,x", t -> Ops.concat(1, t[0], t[0]))
                .ref(d -> Ref.concat(1, new D(d[0], x.shape()), new D(d[0], x.shape())).v()).check(x);
        Tensor e = Tensor.zeros(2, 0);
        assertArrayEquals(x.data(), Ops.concat(1, e, x, e).data());
        // a constant piece (no grad) next to a parameter
        Tensor c = Tensor.ones(2, 1);
        GradCheck.of("concat with constant", t -> Ops.concat(1, c, t[0]))
                .ref(d -> Ref.concat(1, D.of(c), new D(d[0], x.shape())).v()).check(x);
    }

    @Test
    void narrowSplitChunk() {
        Tensor x = TestData.randn(11, 3, 10, 2);
        GradCheck.of("narrow", t -> Ops.narrow(t[0], 1, 2, 5)).ref(d -> Ref.narrow(new D(d[0], x.shape()), 1, 2, 5).v()).check(x);
        GradCheck.of("narrow -1", t -> Ops.narrow(t[0], -1, 1, 1)).ref(d -> Ref.narrow(new D(d[0], x.shape()), 2, 1, 1).v()).check(x);
        GradCheck.of("narrow empty", t -> Ops.sum(Ops.narrow(t[0], 1, 10, 0))).ref(d -> new double[]{0}).check(x);
        int[] sizes = {3, 0, 6, 1};
        Tensor[] parts = Ops.split(x, 1, sizes);
        assertEquals(4, parts.length);
        int off = 0;
        for (int i = 0; i < sizes.length; i++) {
            int o = off, n = sizes[i], k = i;
            assertArrayEquals(new int[]{3, n, 2}, parts[i].shape());
            if (n > 0)
                GradCheck.of("split piece " + i, t -> Ops.split(t[0], 1, sizes)[k])
                        .ref(d -> Ref.narrow(new D(d[0], x.shape()), 1, o, n).v()).check(x);
            off += n;
        }
        // all pieces used at once, in reverse order: every input element gets exactly its own gradient
        GradCheck.of("split reassembled", t -> {
            Tensor[] p = Ops.split(t[0], 1, sizes);
            return Ops.concat(1, p[3], p[2], p[1], p[0]);
        }).ref(d -> {
            D dx = new D(d[0], x.shape());
            return Ref.concat(1, Ref.narrow(dx, 1, 9, 1), Ref.narrow(dx, 1, 3, 6), Ref.narrow(dx, 1, 0, 3)).v();
        }).check(x);
        Tensor[] ch = Ops.chunk(x, 5, 1);
        assertEquals(5, ch.length);
        for (int i = 0; i < 5; i++) {
            int k = i;
            GradCheck.of("chunk " + i, t -> Ops.chunk(t[0], 5, 1)[k]).ref(d -> Ref.narrow(new D(d[0], x.shape()), 1, 2 * k, 2).v()).check(x);
        }
        Tensor[] halves = Ops.chunk(x, 2, -1);
        assertArrayEquals(new int[]{3, 10, 1}, halves[1].shape());
    }

    @Test
    void indexSelectAccumulatesRepeatedIndices() {
        Tensor table = TestData.randn(12, 5, 3);
        int[] ids = {4, 0, 4, 4, 2, 0};
        GradCheck.of("indexSelect rows", t -> Ops.indexSelect(t[0], 0, ids))
                .ref(d -> Ref.indexSelect(new D(d[0], table.shape()), 0, ids).v()).check(table);
        Tensor x = TestData.randn(13, 2, 4, 3);
        int[] mid = {3, 3, 1};
        GradCheck.of("indexSelect middle axis", t -> Ops.indexSelect(t[0], 1, mid))
                .ref(d -> Ref.indexSelect(new D(d[0], x.shape()), 1, mid).v()).check(x);
        // count how often each row was taken: the gradient of sum is that count
        Tensor leaf = Tensor.zeros(5, 3).requiresGrad(true);
        Ops.sum(Ops.indexSelect(leaf, 0, ids)).backward();
        float[] g = leaf.gradData();
        assertArrayEquals(new float[]{2, 2, 2, 0, 0, 0, 1, 1, 1, 0, 0, 0, 3, 3, 3}, g);
        // the caller's index array may be reused afterwards without changing the recorded op
        int[] reused = {1, 2};
        Tensor l2 = Tensor.zeros(3).requiresGrad(true);
        Tensor y = Ops.indexSelect(l2, 0, reused);
        reused[0] = 0;
        Ops.sum(y).backward();
        assertArrayEquals(new float[]{0, 1, 1}, l2.gradData());
        assertArrayEquals(new int[]{0, 3}, Ops.indexSelect(table, 0, new int[0]).shape());
    }

    @Test
    void padWithValue() {
        Tensor x = TestData.randn(14, 2, 3, 5);
        int[] before = {1, 0, 2}, after = {0, 3, 1};
        for (float v : new float[]{0f, -1.5f}) {
            GradCheck.of("pad " + v, t -> Ops.pad(t[0], before, after, v))
                    .ref(d -> Ref.pad(new D(d[0], x.shape()), before, after, v).v()).check(x);
        }
        Tensor p = Ops.pad(Tensor.scalar(2f), new int[0], new int[0], 1f);
        assertEquals(2f, p.item());
        Tensor e = Ops.pad(Tensor.zeros(2, 0), new int[]{0, 1}, new int[]{1, 1}, 7f);
        assertArrayEquals(new int[]{3, 2}, e.shape());
        for (float f : e.data()) assertEquals(7f, f);
        Tensor neg0 = Ops.pad(Tensor.ones(1), new int[]{1}, new int[]{0}, -0f);
        assertEquals(Float.floatToRawIntBits(-0f), Float.floatToRawIntBits(neg0.data()[0]), "pads with -0.0 when asked");
    }

    /** Every op on a tensor with a zero-size axis: forward and backward run and keep the shapes. */
    @Test
    void everyOpAcceptsZeroSizeTensors() {
        Tensor x = Tensor.zeros(2, 0, 3).requiresGrad(true);
        List<java.util.function.Function<Tensor, Tensor>> ops = List.of(
                t -> Ops.add(t, Tensor.ones(3)), t -> Ops.mul(t, Tensor.ones(2, 1, 1)), t -> Ops.div(Tensor.ones(1, 1, 3), Ops.addScalar(t, 1)),
                Ops::exp, Ops::gelu, t -> Ops.sum(t, new int[]{2}, true), t -> Ops.sum(t, new int[]{1}, false), t -> Ops.mean(t, new int[]{0}, true),
                t -> Ops.max(t, new int[]{0}, false), t -> Ops.reshape(t, 3, -1, 2), t -> Ops.permute(t, 2, 0, 1), t -> Ops.flip(t, 1),
                t -> Ops.concat(1, t, t), t -> Ops.narrow(t, 2, 1, 2), t -> Ops.indexSelect(t, 0, new int[]{1, 1}),
                t -> Ops.pad(t, new int[]{0, 1, 0}, new int[]{0, 0, 1}, 2f), t -> Ops.where(Tensor.ones(3), t, Tensor.zeros(1)),
                t -> Ops.expand(t, 4, 2, 0, 3), t -> Ops.matmul(t, Tensor.ones(3, 4), false, false), t -> Ops.matmul(t, Tensor.ones(2, 0, 5), true, false));
        for (int i = 0; i < ops.size(); i++) {
            x.zeroGrad();
            Tensor y = ops.get(i).apply(x);
            assertTrue(y.needsGrad(), "op " + i);
            y.backward(Tensor.ones(y.shape()));
            assertArrayEquals(new float[0], x.gradData(), "op " + i);
        }
        assertEquals(0f, Ops.sum(x).item());
    }

    @Test
    void shapeOpsComposeInAGraph() {
        // patchify-like chain: reshape -> permute -> reshape -> narrow -> flip -> concat
        Tensor x = TestData.randn(15, 2, 4, 6);
        GradCheck.of("chain", t -> {
            Tensor p = Ops.reshape(t[0], 2, 2, 2, 3, 2);
            p = Ops.permute(p, 0, 1, 3, 2, 4);
            p = Ops.reshape(p, 2, 6, 4);
            Tensor a = Ops.flip(Ops.narrow(p, 1, 0, 3), 2);
            return Ops.concat(1, a, Ops.narrow(p, 1, 3, 3));
        }).ref(d -> {
            D p = new D(d[0], new int[]{2, 2, 2, 3, 2});
            p = Ref.permute(p, new int[]{0, 1, 3, 2, 4});
            p = new D(p.v(), new int[]{2, 6, 4});
            return Ref.concat(1, Ref.flip(Ref.narrow(p, 1, 0, 3), 2), Ref.narrow(p, 1, 3, 3)).v();
        }).check(x);
    }
}
