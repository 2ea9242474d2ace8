// The training-state file both trainers resume from: round trip bit for bit, and the exact layout existing run folders have.
package dev.biflow.flow.train;

import dev.biflow.engine.Ops;
import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.io.Safetensors;
import dev.biflow.engine.optim.AdamW;
import dev.biflow.engine.optim.Ema;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.*;

class TrainingStateTest {
    /** Two parameters after two AdamW + EMA steps, so every state tensor holds something non-trivial. */
    record Run(List<Tensor> params, AdamW opt, Ema ema) {}

    static Run trained(boolean withEma) {
        Rng r = new Rng(3);
        List<Tensor> params = List.of(Tensor.randn(r, 3, 4).requiresGrad(true), Tensor.randn(r, 5).requiresGrad(true));
        AdamW opt = new AdamW(params, 1e-2, 0.9, 0.95, 1e-8, 1e-4);
        Ema ema = withEma ? new Ema(params, 0.9) : null;
        for (int s = 0; s < 2; s++) {
            opt.zeroGrad();
            Ops.add(Ops.sum(Ops.mul(params.get(0), params.get(0))), Ops.sum(Ops.mul(params.get(1), params.get(1)))).backward();
            opt.step();
            if (ema != null) ema.update();
        }
        opt.zeroGrad();
        return new Run(params, opt, ema);
    }

    static void assertBitIdentical(Map<String, Tensor> want, Map<String, Tensor> got, String what) {
        assertEquals(List.copyOf(want.keySet()), List.copyOf(got.keySet()), what + " keys");
        for (var e : want.entrySet()) {
            Tensor g = got.get(e.getKey());
            assertArrayEquals(e.getValue().shape(), g.shape(), what + " " + e.getKey() + " shape");
            float[] a = e.getValue().data(), b = g.data();
            assertEquals(a.length, b.length);
            for (int i = 0; i < a.length; i++)
                assertEquals(Float.floatToRawIntBits(a[i]), Float.floatToRawIntBits(b[i]), what + " " + e.getKey() + "[" + i + "]");
        }
    }

    @Test
    void roundTripsEveryFieldBitForBit(@TempDir Path tmp) throws IOException {
        Run run = trained(true);
        Rng rng = new Rng(42);
        rng.nextGaussian(); // leaves a spare normal: all three longs of the state matter
        int[] order = rng.permutation(37);
        TrainingState written = TrainingState.capture(run.opt(), run.ema(), rng, 1234, 17, order);
        Path f = tmp.resolve("state.safetensors");
        written.write(f);

        TrainingState read = TrainingState.read(f);
        assertBitIdentical(run.opt().state(), read.opt(), "opt");
        assertBitIdentical(run.ema().state(), read.ema(), "ema");
        assertArrayEquals(rng.state(), read.rng());
        assertEquals(1234, read.step());
        assertEquals(17, read.cursor());
        assertArrayEquals(order, read.order());

        // restored into a fresh optimizer, EMA and RNG, they carry on exactly where the originals are
        Run fresh = trained(true);
        Ema freshEma = new Ema(fresh.params(), 0.9);
        AdamW freshOpt = new AdamW(fresh.params(), 1e-2, 0.9, 0.95, 1e-8, 1e-4);
        Rng freshRng = new Rng(0);
        read.restore(freshOpt, freshEma, freshRng);
        assertBitIdentical(run.opt().state(), freshOpt.state(), "restored opt");
        assertBitIdentical(run.ema().state(), freshEma.state(), "restored ema");
        assertEquals(rng.nextGaussian(), freshRng.nextGaussian()); // the spare normal came back too
        assertEquals(rng.nextLong(), freshRng.nextLong());
    }

    /**
     * The layout ForwardTrainer and BackwardTrainer wrote before TrainingState existed, spelled out
     * here by hand: run folders written then must still resume, so the file must not change by a byte.
     */
    @Test
    void layoutIsTheOneExistingRunFoldersHave(@TempDir Path tmp) throws IOException {
        for (boolean withEma : new boolean[]{true, false}) {
            Run run = trained(withEma);
            Rng rng = new Rng(7);
            rng.nextGaussian();
            int[] order = rng.permutation(10);
            Path f = tmp.resolve("state-" + withEma + ".safetensors");
            TrainingState.capture(run.opt(), run.ema(), rng, 300, 4, order).write(f);

            Map<String, Tensor> tensors = new LinkedHashMap<>();
            for (var e : run.opt().state().entrySet()) tensors.put("opt." + e.getKey(), e.getValue());
            if (withEma) for (var e : run.ema().state().entrySet()) tensors.put("ema." + e.getKey(), e.getValue());
            float[] ord = new float[order.length];
            for (int i = 0; i < ord.length; i++) ord[i] = order[i];
            tensors.put("data_order", Tensor.of(ord, ord.length));
            long[] rs = rng.state();
            Map<String, String> meta = new LinkedHashMap<>();
            meta.put("step", "300");
            meta.put("cursor", "4");
            meta.put("rng", rs[0] + "," + rs[1] + "," + rs[2]);
            assertArrayEquals(Safetensors.toBytes(tensors, meta), Files.readAllBytes(f), "state file bytes (ema " + withEma + ")");

            // and the names, read back without TrainingState
            Safetensors.Contents c = Safetensors.read(f);
            assertEquals(Map.of("step", "300", "cursor", "4", "rng", rs[0] + "," + rs[1] + "," + rs[2]),
                    Map.copyOf(c.metadata()), "metadata");
            assertTrue(c.tensors().containsKey("opt.step"), "optimizer state under 'opt.'");
            assertTrue(c.tensors().containsKey("opt.exp_avg.0") && c.tensors().containsKey("opt.exp_avg_sq.1"));
            assertEquals(withEma, c.tensors().containsKey("ema.num_updates"), "EMA state under 'ema.' only with EMA");
            assertEquals(withEma, c.tensors().containsKey("ema.shadow.1"));
            for (String k : c.tensors().keySet())
                assertTrue(k.startsWith("opt.") || k.startsWith("ema.") || k.equals("data_order"), "unexpected tensor " + k);
            assertEquals("data_order", List.copyOf(c.tensors().keySet()).get(c.tensors().size() - 1), "data_order last");
            assertEquals(List.of("opt.", "ema.", "data_order", "step", "cursor", "rng"),
                    List.of(TrainingState.OPT_PREFIX, TrainingState.EMA_PREFIX, TrainingState.ORDER_KEY,
                            TrainingState.STEP_KEY, TrainingState.CURSOR_KEY, TrainingState.RNG_KEY));
        }
    }

    @Test
    void aRunWithoutEmaReadsBackAnEmptyEmaState(@TempDir Path tmp) throws IOException {
        Run run = trained(false);
        Path f = tmp.resolve("s.safetensors");
        TrainingState.capture(run.opt(), null, new Rng(1), 5, 0, new int[]{2, 0, 1}).write(f);
        TrainingState s = TrainingState.read(f);
        assertTrue(s.ema().isEmpty());
        s.restore(new AdamW(run.params(), 1e-2, 0.9, 0.95, 1e-8, 1e-4), null, new Rng(9)); // no EMA to load: fine
    }

    /** A state file with a piece missing or wrong: an IOException naming the file and the piece, never an NPE or a silent bad order. */
    @Test
    void aDamagedStateFileIsAClearError(@TempDir Path tmp) throws IOException {
        Run run = trained(false);
        Path f = tmp.resolve("s.safetensors");
        TrainingState.capture(run.opt(), null, new Rng(1), 5, 1, new int[]{2, 0, 1}).write(f);
        Safetensors.Contents c = Safetensors.read(f);
        record Case(String what, Map<String, String> meta, float[] order) {}
        Map<String, String> noRng = new LinkedHashMap<>(c.metadata());
        noRng.remove("rng");
        Map<String, String> badRng = new LinkedHashMap<>(c.metadata());
        badRng.put("rng", "1,2");
        Map<String, String> badCursor = new LinkedHashMap<>(c.metadata());
        badCursor.put("cursor", "9");
        for (Case k : List.of(new Case("no 'rng' metadata", noRng, null), new Case("three comma-separated", badRng, null),
                new Case("not a permutation", c.metadata(), new float[]{2, 2, 1}), new Case("not a permutation", c.metadata(), new float[]{0, 1, 3}),
                new Case("not a permutation", c.metadata(), new float[]{0, 1.5f, 2}), new Case("cursor 9", badCursor, null))) {
            Map<String, Tensor> t = new LinkedHashMap<>(c.tensors());
            if (k.order() != null) t.put("data_order", Tensor.of(k.order(), 3));
            Path bad = tmp.resolve("bad.safetensors");
            Safetensors.write(bad, t, k.meta());
            IOException e = assertThrows(IOException.class, () -> TrainingState.read(bad));
            assertTrue(e.getMessage().contains(bad.toString()) && e.getMessage().contains(k.what()), e.getMessage());
        }
    }
}
